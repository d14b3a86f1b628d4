"""The field types every section shares: identifiers, exact amounts (never a float), the
frozen model base, secret references (resolved only when used) and what counts as loopback."""

from __future__ import annotations

import ipaddress
import os
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from gateway.errors import SecretUnavailable
from gateway.input_limits import MAX_SECRET_BYTES, Refused, read_text_file

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]


def _no_float(value: object) -> object:
    if isinstance(value, float):
        raise ValueError(  # noqa: TRY004 - pydantic reports ValueErrors as validation errors
            'write amounts as strings, e.g. "50.00" (a float is not exact)'
        )
    return value


Amount = Annotated[Decimal, BeforeValidator(_no_float)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Model):
    """Where a secret lives. Exactly one of the four; ``value`` is for demos and tests."""

    env: str | None = None
    file: Path | None = None
    credential: str | None = Field(
        default=None, description="systemd LoadCredential= name, read from $CREDENTIALS_DIRECTORY"
    )
    value: SecretStr | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [k for k in ("env", "file", "credential", "value") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file, credential or value")
        return self

    def reveal(self) -> str:
        """The secret's text; SecretUnavailable names where it was looked for (never the value)."""
        if self.value is not None:
            return self.value.get_secret_value()
        if self.env is not None:
            found = os.environ.get(self.env)
            if found is None:
                raise SecretUnavailable(f"secret: environment variable {self.env} is not set")
            return found
        path = self.file or Path()
        if self.credential is not None:
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if directory is None:
                raise SecretUnavailable(
                    f"secret: credential {self.credential!r} needs $CREDENTIALS_DIRECTORY "
                    f"(systemd LoadCredential=)"
                )
            path = Path(directory) / self.credential
        try:
            return read_text_file(path, MAX_SECRET_BYTES).strip()
        except OSError as exc:
            raise SecretUnavailable(f"secret: cannot read {path}: {exc.strerror}") from None
        except Refused as exc:
            raise SecretUnavailable(f"secret: refusing {path}: {exc}") from None

    def __repr__(self) -> str:
        where = self.env or self.file or self.credential or "inline"
        return f"SecretRef({where!s})"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
