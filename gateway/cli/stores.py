"""The CLI's one way to open the database a config names, when the daemon must have run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.store import Store


def open_existing(config: Path, *, write: bool = False) -> Store:
    """Read-only unless ``write``; a clear error when there is no database yet."""
    from gateway.settings import load_settings
    from gateway.store import Store

    settings = load_settings(config)
    if not settings.storage.path.exists():
        raise GatewayError(
            f"{settings.storage.path}: no database yet (the daemon has not run with this config)"
        )
    return Store.open(settings.storage.path, read_only=not write)
