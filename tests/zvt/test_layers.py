"""The folder shows the layer: ZVT's sans-I/O cores import no transport, no asyncio, no adapter.

Read from the source with ``ast`` (not by importing), so an import inside a function counts too.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import REPO, imports_of

CORES = sorted((REPO / "drivers" / "zvt").glob("*.py"))
FORBIDDEN = (
    "asyncio",
    "drivers.transport",
    "drivers.zvt.asyncio",
    "serial",
    "usb",
    "socket",
    "gateway",
)


def test_the_cores_are_the_files_we_think() -> None:
    names = {p.stem for p in CORES}
    assert {"fields", "apdu", "messages", "serial_framing", "link", "sequences"} <= names
    assert not names & {"client", "terminal"}  # the asyncio adapter lives in drivers/zvt/asyncio/


def test_cores_never_import_transports_or_asyncio() -> None:
    offences = [
        f"{path.name} imports {module}"
        for path in CORES
        for module in sorted(imports_of(path))
        if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN)
    ]
    assert offences == []


def test_the_rule_would_see_an_offence(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "def f():\n    import asyncio\n    from drivers.transport.base import Transport\n"
    )
    assert {"asyncio", "drivers.transport.base"} <= imports_of(sneaky)
