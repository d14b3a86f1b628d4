"""Fuzzing: every parser that takes bytes from outside, fed mutated inputs; only typed errors.

A parser that meets hostile bytes (a terminal's line noise, a CPO's body, a charger's MQTT
payload, a technician's config file) must answer with its own error type, never an
IndexError, a KeyError, a RecursionError or a hang. The engine here is a seeded mutation
fuzzer over real examples (the six-APDU mix and the golden ZVT vectors, the OCPI spec's JSON
examples, the charger messages, the shipped configs): byte-level mutations (flip, set,
insert, delete, repeat, splice, truncate, interesting bytes such as DLE, FF, 00) and, for JSON,
structure-level ones (a value swapped for another type, a huge number, a long or odd string, a
key dropped or added, deep nesting). Each input runs under a timer: longer than ``HANG_S`` is a
hang. What fails is written to ``crashers/<target>/`` and replayed by the default suite
forever after (``test_campaigns.py``), once fixed.

atheris (coverage-guided) drives the same targets with ``--engine atheris`` where it installs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bench.zvt_codec import MIX
from drivers.zvt import messages as m
from drivers.zvt.apdu import Apdu, ApduReader
from drivers.zvt.errors import ZvtDecodeError
from drivers.zvt.fields import decode_bmps, decode_tlv
from drivers.zvt.link import ApduReceived, SerialLink, StreamLink
from drivers.zvt.serial_framing import FrameDecoder, frame
from firmware_bridge import contract
from firmware_bridge.everest import EverestEvse, EverestMapping
from firmware_bridge.link import ContractMapping
from gateway.errors import ConfigError
from gateway.ocpi import models
from gateway.ocpi.server_bodies import BadRequest, decode_body
from gateway.settings import parse_settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CRASHERS = HERE / "crashers"
HANG_S = 2.0


@dataclass(frozen=True)
class Target:
    name: str
    call: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]
    structured: bool = False  # JSON: structure-level mutations too
    fixup: Callable[[bytes], bytes] | None = (
        None  # most mutants made consistent again (a length byte)
    )


@dataclass
class Finding:
    target: str
    kind: str  # crash, hang
    error: str
    data: bytes


@dataclass
class Report:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)


# ---- the targets ------------------------------------------------------------------------------


def _zvt_seeds() -> list[bytes]:
    from tests.zvt.test_golden import ECR_COMMANDS

    return [*MIX, *(message.to_apdu().encode() for _, message, *_ in ECR_COMMANDS)]


def _apdu_length(data: bytes) -> bytes:
    """The APDU's length byte made right again, so that a mutant reaches the BMP decoder
    instead of being refused at the length check."""
    if len(data) >= 3 and len(data) - 3 < 0xFF:
        return data[:2] + bytes([len(data) - 3]) + data[3:]
    return data


def _tlv_seeds() -> list[bytes]:
    found = []
    for raw in _zvt_seeds():
        with contextlib.suppress(ZvtDecodeError):
            value = m.decode(raw).get(0x06)
            if value:
                found.append(value)
    return found or [bytes.fromhex("e90e1f620241431f6306333834484832")]


def _bmp_seeds() -> list[bytes]:
    return [raw[3:] for raw in MIX]


def _framing(data: bytes) -> None:
    decoder = FrameDecoder()
    rng = random.Random(len(data))
    pos = 0
    while pos < len(data):  # in random chunks: the decoder's fast paths and its per-byte path
        step = rng.randint(1, 64)
        decoder.feed(data[pos : pos + step])
        pos += step


def _serial_link(data: bytes) -> None:
    link = SerialLink()
    link.send_apdu(bytes.fromhex("060000"), 0.0)
    now, pos = 0.0, 0
    while pos < len(data):
        link.receive_data(data[pos : pos + 17], now)
        now += 0.3
        link.on_deadline(now)
        link.data_to_send()
        while link.next_event() is not None:
            if (
                data[pos] & 1
            ):  # answer some (80 00): a repeat after an answer is new, not a retransmission
                link.send_apdu(b"\x80\x00\x00", now)
        pos += 17


def _stream_link(data: bytes) -> None:
    link = StreamLink()
    link.receive_data(data, 0.0)
    while (event := link.next_event()) is not None:
        with contextlib.suppress(ZvtDecodeError):
            assert isinstance(event, ApduReceived)  # a stream has no line to fail
            m.Message.from_apdu(event.apdu)


def _apdu_reader(data: bytes) -> None:
    reader = ApduReader()
    for apdu in reader.feed(data[: len(data) // 2]) + reader.feed(data[len(data) // 2 :]):
        with contextlib.suppress(ZvtDecodeError):
            m.Message.from_apdu(apdu)


OCPI_EXAMPLES = {  # bodies of our own modules and of objects the spec gives no example of
    "command_result": {"result": "ACCEPTED"},
    "fiscal_data": {
        "lines": ["Rechnung 2026-0042"],
        "invoice_reference_id": "INV-42",
        "invoice_url": "https://cpo.example/i/42",
        "fields": {"zki": "a" * 32, "jir": "b" * 36},
    },
}


def _ocpi_seeds(*names: str) -> Callable[[], list[bytes]]:
    def seeds() -> list[bytes]:
        found = []
        for name in names:
            path = REPO / "tests" / "data" / "ocpi" / name
            found.append(
                path.read_bytes() if path.exists() else json.dumps(OCPI_EXAMPLES[name]).encode()
            )
        return found

    return seeds


def _ocpi(model: type[Any]) -> Callable[[bytes], object]:
    return lambda data: decode_body(data, model)


CHARGER_EXAMPLES = {
    "plugged": {"v": 1, "id": "m1", "target_kwh": "20.5"},
    "started": {"v": 1, "id": "m2", "session_id": "S1", "meter_wh": 1000},
    "meter": {"v": 1, "id": "m3", "session_id": "S1", "seq": 4, "meter_wh": 2500, "power_w": 11000},
    "stopped": {"v": 1, "id": "m4", "session_id": "S1", "meter_wh": 9000, "reason": "ev"},
    "fault": {"v": 1, "id": "m5", "session_id": "S1", "reason": "overcurrent"},
}


def _contract(data: bytes) -> None:
    mapping = ContractMapping("evpay")
    name = list(contract.INBOUND)[data[0] % len(contract.INBOUND)] if data else "meter"
    mapping.decode(f"evpay/charger/charger/evse/E1/{name}", data)


EVEREST = "everest_api/evse_manager_consumer/evse1/e2m/"
EVEREST_EXAMPLES = [
    {
        "uuid": "u1",
        "event": "SessionStarted",
        "timestamp": "2026-11-26T07:00:00.000Z",
        "session_started": {
            "reason": "EVConnected",
            "meter_value": {"energy_Wh_import": {"total": 100000}},
        },
    },
    {
        "uuid": "u1",
        "event": "TransactionStarted",
        "timestamp": "2026-11-26T07:00:01.000Z",
        "transaction_started": {
            "id_tag": {"id_token": {"value": "x"}},
            "meter_value": {"energy_Wh_import": {"total": 1}},
        },
    },
    {
        "uuid": "u1",
        "event": "TransactionFinished",
        "timestamp": "2026-11-26T07:10:00.000Z",
        "transaction_finished": {
            "meter_value": {"energy_Wh_import": {"total": 9000}},
            "reason": "EVDisconnected",
        },
    },
    {"timestamp": "2026-11-26T07:05:00.000Z", "energy_Wh_import": {"total": 5000}},
]


def _everest(data: bytes) -> None:
    mapping = EverestMapping("token_provider", "auth", [EverestEvse("E1", "evse1")])
    mapping._sessions["E1"] = "S1"  # a charge of ours is under way: meter values are read too
    topic = EVEREST + (
        "powermeter" if data[:1] == b"{" and b"energy_Wh_import" in data[:60] else "session_event"
    )
    mapping.decode(topic, data)


def _config(data: bytes) -> None:
    parse_settings(data.decode("utf-8", "replace"), "<fuzz>")


def targets() -> list[Target]:
    from tests.campaigns import fuzz_nexo

    zvt_errors = (ZvtDecodeError,)
    ocpi = [
        (
            "ocpi.credentials",
            models.Credentials,
            ("credentials_example.json", "credentials_example2.json"),
        ),
        ("ocpi.terminal_patch", models.TerminalPatch, ("payment_terminal_put_update.json",)),
        (
            "ocpi.terminal_activation",
            models.TerminalActivation,
            ("payment_terminal_activate.json",),
        ),
        (
            "ocpi.session",
            models.OcpiSession,
            ("session_example_1_simple_start.json", "session_example_2_short_finished.json"),
        ),
        (
            "ocpi.session_patch",
            models.OcpiSessionPatch,
            ("session_patch_example_charging_period.json", "session_patch_example_total_cost.json"),
        ),
        ("ocpi.cdr", models.Cdr, ("cdr_example.json",)),
        ("ocpi.command_result", models.CommandResult, ("command_result",)),
        ("ocpi.fiscal_data", models.FiscalData, ("fiscal_data",)),
    ]
    return [
        Target("zvt.message", m.decode, zvt_errors, _zvt_seeds, fixup=_apdu_length),
        Target("zvt.apdu", Apdu.decode, zvt_errors, _zvt_seeds, fixup=_apdu_length),
        Target("zvt.bmps", decode_bmps, zvt_errors, _bmp_seeds),
        Target("zvt.tlv", decode_tlv, zvt_errors, _tlv_seeds),
        Target("zvt.framing", _framing, (), lambda: [frame(raw) for raw in _zvt_seeds()]),
        Target(
            "zvt.serial_link",
            _serial_link,
            (),
            lambda: [frame(raw) + b"\x06" for raw in _zvt_seeds()],
        ),
        Target("zvt.stream_link", _stream_link, (), _zvt_seeds, fixup=_apdu_length),
        Target("zvt.apdu_reader", _apdu_reader, (), _zvt_seeds, fixup=_apdu_length),
        *(
            Target(name, _ocpi(model), (BadRequest,), _ocpi_seeds(*files), structured=True)
            for name, model, files in ocpi
        ),
        Target(
            "mqtt.contract",
            _contract,
            (ValidationError, ValueError),
            lambda: [json.dumps(x).encode() for x in CHARGER_EXAMPLES.values()],
            structured=True,
        ),
        Target(
            "mqtt.everest",
            _everest,
            (ValidationError, ValueError),
            lambda: [json.dumps(x).encode() for x in EVEREST_EXAMPLES],
            structured=True,
        ),
        Target(
            "config",
            _config,
            (ConfigError,),
            lambda: [
                (REPO / "config" / n).read_bytes() for n in ("gateway.example.toml", "demo.toml")
            ],
        ),
        *fuzz_nexo.targets(),
    ]


def target(name: str) -> Target:
    return next(t for t in targets() if t.name == name)


# ---- the mutator ------------------------------------------------------------------------------

INTERESTING = [
    b"\x00",
    b"\xff",
    b"\x10",
    b"\x10\x10",
    b"\x10\x02",
    b"\x10\x03",
    b"\x7f",
    b"\x80",
    b"\xf9",
    b"\xff\xff",
    b"9" * 40,
    b"-1",
    b"1e999",
    b'"',
    b"\\",
    b"{",
    b"[",
    b"\xc3\x28",
    b"\xf0\x9f\x92",
]
ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63,
    -(2**63) - 1,
    10**40,
    1.5,
    1e308,
    "",
    "x" * 5000,
    "\u0000",
    "\ud7ff\ue000",
    "9" * 30,
    [],
    {},
    [[[[[[[[]]]]]]]],
    {"a": {"b": {"c": {}}}},
    "2026-13-45T99:99:99Z",
    "4111111111111111",
]


def mutate(rng: random.Random, seeds: list[bytes], structured: bool) -> bytes:
    data = rng.choice(seeds)
    if structured and rng.random() < 0.5:
        with contextlib.suppress(ValueError, RecursionError):
            return _mutate_json(rng, json.loads(data))
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op = rng.randrange(8)
        pos = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(pos, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        elif op == 2:
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and out:
            del out[pos : pos + rng.randint(1, 16)]
        elif op == 4 and out:
            chunk = out[pos : pos + rng.randint(1, 32)]
            out[pos:pos] = chunk * rng.randint(1, 20)
        elif op == 5:
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            out[pos:] = other[cut:]
        elif op == 6:
            del out[pos:]
        else:
            out[pos:pos] = rng.choice(INTERESTING)
    return bytes(out)


def _mutate_json(rng: random.Random, doc: Any) -> bytes:
    for _ in range(rng.randint(1, 3)):
        doc = _mutate_node(rng, doc, depth=0)
    return json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")


def _mutate_node(rng: random.Random, node: Any, depth: int) -> Any:
    if isinstance(node, dict) and node and rng.random() < 0.8:
        key = rng.choice(list(node))
        choice = rng.random()
        if choice < 0.15:
            node = {k: v for k, v in node.items() if k != key}
        elif choice < 0.25:
            node = {**node, rng.choice(["extra", key + "_", "", "id"]): rng.choice(ODD_VALUES)}
        else:
            node = {**node, key: _mutate_node(rng, node[key], depth + 1)}
        return node
    if isinstance(node, list) and node and rng.random() < 0.8:
        i = rng.randrange(len(node))
        if rng.random() < 0.2:
            return node * rng.randint(2, 50)
        return [*node[:i], _mutate_node(rng, node[i], depth + 1), *node[i + 1 :]]
    if rng.random() < 0.05:
        deep: Any = rng.choice(ODD_VALUES)
        for _ in range(rng.randint(10, 400)):
            deep = [deep]
        return deep
    return rng.choice(ODD_VALUES)


# ---- the run ----------------------------------------------------------------------------------


class Hang(Exception):
    pass


@contextlib.contextmanager
def _timer(seconds: float) -> Iterator[None]:
    def ring(_signum: int, _frame: object) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check(t: Target, data: bytes) -> Finding | None:
    """One input: None if the parser answered or raised one of its own errors."""
    try:
        with _timer(HANG_S):
            t.call(data)
    except t.allowed:
        return None
    except Hang as exc:
        return Finding(t.name, "hang", str(exc), data)
    except Exception as exc:  # noqa: BLE001 - anything else is what the campaign looks for
        return Finding(t.name, "crash", f"{type(exc).__name__}: {exc}"[:300], data)
    return None


def run_target(t: Target, inputs: int, seed: int, keep: bool = True) -> Report:
    rng = random.Random(f"{seed}:{t.name}")
    seeds = t.seeds()
    report = Report(t.name)
    started = time.perf_counter()
    for data in seeds:  # the examples themselves first
        if (found := check(t, data)) is not None:
            report.findings.append(found)
    for _ in range(inputs):
        data = mutate(rng, seeds, t.structured)
        if t.fixup is not None and rng.random() < 0.7:
            data = t.fixup(data)
        found = check(t, data)
        if found is not None:
            report.findings.append(found)
            if keep:
                save(found)
            if len(report.findings) >= 20:
                break
    report.inputs = inputs + len(seeds)
    report.seconds = time.perf_counter() - started
    return report


def save(found: Finding) -> Path:
    """Keep a failing input as a regression case (``crashers/<target>/<sha>.bin``)."""
    where = CRASHERS / found.target
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{hashlib.sha256(found.data).hexdigest()[:16]}.bin"
    path.write_bytes(found.data)
    return path


def kept() -> list[tuple[str, Path]]:
    """Every input kept so far, with its target."""
    if not CRASHERS.is_dir():
        return []
    return [
        (d.name, p)
        for d in sorted(CRASHERS.iterdir())
        if d.is_dir()
        for p in sorted(d.glob("*.bin"))
    ]


SIZES = {"small": 300, "medium": 20_000, "full": 1_000_000}  # mutated inputs per target


def run_atheris(t: Target, runs: int, seed: int) -> None:
    """libFuzzer through atheris on one target, coverage-guided from its examples. It exits the
    process when done (libFuzzer's way): ``atheris_run.py`` gives each target a process of its
    own, with our packages instrumented."""
    import atheris

    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{t.name}-"))
    for i, data in enumerate(t.seeds()):
        (corpus / f"seed-{i}").write_bytes(data)

    def one(data: bytes) -> None:
        found = check(t, t.fixup(data) if t.fixup is not None else data)
        if found is not None:
            save(found)
            raise RuntimeError(f"{t.name}: {found.kind}: {found.error}")

    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={runs}",
            f"-seed={seed}",
            "-max_len=8192",
            "-print_final_stats=1",
            str(corpus),
        ],
        one,
    )
    atheris.Fuzz()


def run(size: str, seed: int, only: str | None = None) -> list[Report]:
    inputs = SIZES[size]
    return [run_target(t, inputs, seed) for t in targets() if only is None or t.name == only]
