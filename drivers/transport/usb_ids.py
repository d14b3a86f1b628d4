"""USB devices a terminal may appear as, in one place: the udev rules (`evpay install` writes
them from this table), the USB transport's device search and the test emulation use it.

Terminals on the bench so far reach the controller through USB-serial bridges; a terminal
model whose own VID:PID is confirmed on the bench is added here with its name. No terminal
model's VID:PID has been confirmed yet (hil/README.md keeps the results).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UsbId:
    vid: int
    pid: int
    name: str  # the stable name's prefix: /dev/evpay/<name>-<serial>
    kind: str  # "serial" (a tty appears) or "raw" (libusb bulk endpoints)


KNOWN: tuple[UsbId, ...] = (
    UsbId(0x0403, 0x6001, "ftdi-ft232r", "serial"),
    UsbId(0x0403, 0x6015, "ftdi-ft231x", "serial"),
    UsbId(0x067B, 0x2303, "prolific-pl2303", "serial"),
    UsbId(0x10C4, 0xEA60, "silabs-cp210x", "serial"),
    UsbId(0x1A86, 0x7523, "wch-ch340", "serial"),
)


def udev_rules(group: str = "evpay") -> str:
    """Stable names /dev/evpay/<name>-<serial> for known devices, readable by the service."""
    lines = [
        "# Written by `evpay install` from drivers/transport/usb_ids.py: do not edit here.",
        "# Each known terminal interface gets a stable name /dev/evpay/<model>-<serial>.",
    ]
    for d in KNOWN:
        match = f'ATTRS{{idVendor}}=="{d.vid:04x}", ATTRS{{idProduct}}=="{d.pid:04x}"'
        if d.kind == "serial":
            lines.append(
                f'SUBSYSTEM=="tty", {match}, SYMLINK+="evpay/{d.name}-$attr{{serial}}", '
                'GROUP="dialout", MODE="0660"'
            )
        else:
            lines.append(
                f'SUBSYSTEM=="usb", ENV{{DEVTYPE}}=="usb_device", {match}, '
                f'SYMLINK+="evpay/{d.name}-$attr{{serial}}", GROUP="{group}", MODE="0660"'
            )
    return "\n".join(lines) + "\n"
