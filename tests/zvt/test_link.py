"""The serial link core, byte by byte and timer by timer (no I/O, injected time)."""

from __future__ import annotations

from drivers.zvt.apdu import Apdu
from drivers.zvt.link import ApduReceived, LinkFailed, SerialLink, StreamLink
from drivers.zvt.serial_framing import ACK, NAK, frame

APDU = bytes.fromhex("06 0F 00".replace(" ", ""))
RESULT = bytes.fromhex("04 0F 02 27 00".replace(" ", ""))


def events(link: SerialLink) -> list[object]:
    out: list[object] = []
    while (e := link.next_event()) is not None:
        out.append(e)
    return out


def test_send_waits_for_ack_then_sends_the_next() -> None:
    link = SerialLink()
    link.send_apdu(APDU, 0.0)
    link.send_apdu(RESULT, 0.0)
    assert link.data_to_send() == frame(APDU)  # one frame in flight at a time
    assert link.next_deadline() == 5.0
    link.receive_data(bytes([ACK]), 0.1)
    assert link.data_to_send() == frame(RESULT)
    link.receive_data(bytes([ACK]), 0.2)
    assert link.idle and link.next_deadline() is None


def test_nak_retransmits_at_most_twice_then_fails() -> None:
    link = SerialLink()
    link.send_apdu(APDU, 0.0)
    link.data_to_send()
    for attempt in range(2):
        link.receive_data(bytes([NAK]), 0.1 * attempt)
        assert link.data_to_send() == frame(APDU)
    link.receive_data(bytes([NAK]), 1.0)
    assert link.data_to_send() == b""
    assert isinstance(events(link)[0], LinkFailed)
    assert link.stats["retransmits"] == 2


def test_t2_timeout_retransmits() -> None:
    link = SerialLink(t2=5.0)
    link.send_apdu(APDU, 0.0)
    link.data_to_send()
    link.on_deadline(4.9)
    assert link.data_to_send() == b""
    link.on_deadline(5.0)
    assert link.data_to_send() == frame(APDU)
    link.receive_data(bytes([ACK]), 5.1)
    assert link.idle and events(link) == []


def test_receive_byte_by_byte_acks_and_delivers() -> None:
    link = SerialLink()
    wire = frame(RESULT)
    for i, b in enumerate(wire):
        assert link.data_to_send() == b""
        link.receive_data(bytes([b]), 0.01 * i)
    assert link.data_to_send() == bytes([ACK])
    assert events(link) == [ApduReceived(Apdu.decode(RESULT))]


def test_corrupted_crc_is_nakked_and_the_repeat_accepted() -> None:
    link = SerialLink()
    bad = bytearray(frame(RESULT))
    bad[-1] ^= 0x55
    link.receive_data(bytes(bad), 0.0)
    assert link.data_to_send() == bytes([NAK]) and events(link) == []
    link.receive_data(frame(RESULT), 0.1)
    assert link.data_to_send() == bytes([ACK]) and len(events(link)) == 1


def test_stalled_frame_t1_is_nakked() -> None:
    link = SerialLink(t1=0.2)
    wire = frame(RESULT)
    link.receive_data(wire[:4], 0.0)
    assert link.next_deadline() == 0.2
    link.on_deadline(0.2)
    assert link.data_to_send() == bytes([NAK])
    link.receive_data(wire, 0.5)  # the sender repeats the whole frame
    assert link.data_to_send() == bytes([ACK]) and len(events(link)) == 1


def test_noise_before_a_frame_is_skipped() -> None:
    link = SerialLink()
    link.receive_data(b"\x00\x41\xfe\x02\x03" + frame(RESULT), 0.0)
    assert link.data_to_send() == bytes([ACK]) and len(events(link)) == 1


def test_a_retransmission_before_we_answered_is_not_delivered_twice() -> None:
    link = SerialLink()
    link.receive_data(frame(RESULT), 0.0)
    assert len(events(link)) == 1
    link.data_to_send()  # our ACK, lost on the line; the result is still being stored
    link.receive_data(frame(RESULT), 5.0)  # the peer never saw our ACK and repeats
    assert link.data_to_send() == bytes([ACK])
    assert events(link) == [] and link.stats["duplicates"] == 1


def test_the_same_status_after_our_app_ack_is_a_new_message() -> None:
    """PTs repeat "please wait" (04 FF 17) while the host authorises; each needs its 80 00.
    Dropping the repeats once stalled a payment over a serial line."""
    please_wait = bytes.fromhex("04FF0117")
    link = SerialLink()
    for step in range(3):
        link.receive_data(frame(please_wait), step)
        assert len(events(link)) == 1
        link.data_to_send()
        link.send_apdu(b"\x80\x00\x00", step + 0.1)
        link.data_to_send()
        link.receive_data(bytes([ACK]), step + 0.2)
    assert link.stats["duplicates"] == 0


def test_the_same_message_after_we_sent_a_command_is_new() -> None:
    link = SerialLink()
    link.receive_data(frame(APDU), 0.0)
    link.send_apdu(bytes.fromhex("050100"), 0.1)
    link.receive_data(bytes([ACK]), 0.2)
    link.receive_data(frame(APDU), 0.3)
    assert len(events(link)) == 2


def test_a_valid_crc_over_a_broken_apdu_is_nakked() -> None:
    link = SerialLink()
    link.receive_data(frame(b"\x06\x0f\x05\x00"), 0.0)  # LEN says 5, one byte follows
    assert link.data_to_send() == bytes([NAK]) and events(link) == []


def test_two_links_back_to_back() -> None:
    ecr, pt = SerialLink(), SerialLink()
    ecr.send_apdu(APDU, 0.0)
    for step in range(10):
        pt.receive_data(ecr.data_to_send(), step)
        ecr.receive_data(pt.data_to_send(), step)
    assert ecr.idle and events(pt) == [ApduReceived(Apdu.decode(APDU))]


def test_an_acknowledged_unanswered_frame_would_be_dropped_if_sent_again() -> None:
    """The peer's link ACKs our command and its application ignores it (a PT busy as master).
    The same bytes again, with nothing from the peer in between, are a retransmission to the
    peer's link: dropped. Our link says so, so the sequence layer sends something else first;
    once the peer has sent a frame, or after another frame of ours, the repeat is news again."""
    command = bytes.fromhex("0501 03 123456".replace(" ", ""))
    ecr, pt = SerialLink(), SerialLink()

    def exchange(now: float) -> None:
        for _ in range(3):
            pt.receive_data(ecr.data_to_send(), now)
            ecr.receive_data(pt.data_to_send(), now)

    assert not ecr.taken_for_a_retransmission(command)
    ecr.send_apdu(command, 0.0)
    exchange(0.0)
    assert len(events(pt)) == 1 and ecr.taken_for_a_retransmission(command)
    ecr.reset()  # our end of the line reopened: the peer's link still remembers
    assert ecr.taken_for_a_retransmission(command)
    assert not ecr.taken_for_a_retransmission(APDU)
    ecr.send_apdu(command, 6.0)  # sent anyway: the peer's link drops it, as predicted
    exchange(6.0)
    assert events(pt) == [] and pt.stats["duplicates"] == 1
    pt.send_apdu(RESULT, 7.0)  # the peer sends something: our repeat is a new message to it
    exchange(7.0)
    assert not ecr.taken_for_a_retransmission(command)
    ecr.send_apdu(APDU, 8.0)  # or another frame of ours goes first
    exchange(8.0)
    assert not ecr.taken_for_a_retransmission(command)
    assert not StreamLink().taken_for_a_retransmission(command)


def test_stream_link_cuts_apdus_from_a_split_stream() -> None:
    link = StreamLink()
    stream = RESULT + APDU
    for i in range(len(stream)):
        link.receive_data(stream[i : i + 1], 0.0)
    got = []
    while (e := link.next_event()) is not None:
        got.append(e)
    assert got == [ApduReceived(Apdu.decode(RESULT)), ApduReceived(Apdu.decode(APDU))]
