"""Attacks on config and secret reading (issue 27): `evpay config validate` must answer one
line and exit 2, never a traceback, a hang or a MemoryError."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.helpers import HANG_GUARD_S
from tests.test_bad_input import CONFIG, _evpay, _one_line


@pytest.mark.parametrize("quote", ["'", '"'])
def test_a_string_ending_in_four_quotes_hides_deep_nesting_from_the_scanner(
    tmp_path: Path, quote: str
) -> None:
    q3 = quote * 3
    text = f"x = [{q3}a{q3}{quote}, " + "[" * 50_000 + "]" * 50_000 + "]\n"
    config = tmp_path / "evpay.toml"
    config.write_text(text, encoding="utf-8")
    started = time.monotonic()
    result = _evpay("config", "validate", "--skip-secrets", str(config))
    assert time.monotonic() - started < HANG_GUARD_S
    assert result.returncode == 2, (result.returncode, result.stderr[-300:])
    _one_line(result)


@pytest.mark.parametrize(
    "text",
    [
        # depth through table headers and dotted keys together (64 + 64 + 16)
        "["
        + ".".join(["a"] * 64)
        + "]\n"
        + ".".join(["b"] * 64)
        + " = "
        + "[" * 15
        + "]" * 15
        + "\n",
        # many lines of 64-part keys: linear, not quadratic
        "".join(f"k{i}" + ".p" * 63 + " = 1\n" for i in range(5_000)),
        # an escaped quote before the brackets, a comment holding a quote
        'x = "\\"" # "\ny = ' + "[" * 50_000 + "]" * 50_000 + "\n",
        "# '''\nx = " + "[" * 50_000 + "]" * 50_000 + "\n",
        "x = '''\n'''\ny = " + "[" * 50_000 + "]" * 50_000 + "\n",
        "\ufeffx = " + "[" * 50_000 + "]" * 50_000 + "\n",
    ],
    ids=[
        "headers-plus-dotted",
        "5000-lines-of-64-parts",
        "escaped-quote",
        "comment-quote",
        "multiline-literal",
        "bom",
    ],
)
def test_other_toml_shapes_are_one_line(tmp_path: Path, text: str) -> None:
    config = tmp_path / "evpay.toml"
    config.write_text(text, encoding="utf-8")
    started = time.monotonic()
    result = _evpay("config", "validate", "--skip-secrets", str(config))
    assert time.monotonic() - started < HANG_GUARD_S
    assert result.returncode == 2
    assert "Traceback" not in result.stderr, result.stderr[-500:]  # a list of errors is fine


def _make(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "secret"
    if kind == "symlink-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "sparse-1GiB":
        with path.open("wb") as f:
            f.truncate(1 << 30)
    elif kind == "64KiB+1":
        path.write_text("a" * (64 * 1024 + 1), encoding="utf-8")
    elif kind == "dangling-symlink":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "unreadable":
        path.write_text("x", encoding="utf-8")
        path.chmod(0)
    elif kind == "invalid-utf8-config":
        pass
    return path


@pytest.mark.parametrize(
    "kind",
    ["symlink-to-dev-zero", "directory", "sparse-1GiB", "64KiB+1", "dangling-symlink"],
)
def test_a_hostile_secret_file_is_one_line_exit_2(tmp_path: Path, kind: str) -> None:
    secret = _make(tmp_path, kind)
    config = tmp_path / "evpay.toml"
    config.write_text(CONFIG.format(secret=secret), encoding="utf-8")
    started = time.monotonic()
    result = _evpay("config", "validate", str(config))
    assert time.monotonic() - started < HANG_GUARD_S
    assert result.returncode == 2, result.stderr
    assert "terminals.0.password" in _one_line(result)


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "evpay.toml"
    config.write_bytes(b'[site]\nid = "\xff\xfe"\n')
    result = _evpay("config", "validate", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr, result.stderr[-500:]


def test_a_secret_growing_while_read_is_cut_at_the_limit(tmp_path: Path) -> None:
    """A FIFO that a writer keeps feeding is refused (not a regular file); a regular file that
    grows is read only up to the limit."""
    secret = tmp_path / "secret"
    os.mkfifo(secret)
    config = tmp_path / "evpay.toml"
    config.write_text(CONFIG.format(secret=secret), encoding="utf-8")
    fd = os.open(secret, os.O_RDWR | os.O_NONBLOCK)  # a writer that never stops (the pipe is full)
    try:
        os.write(fd, b"a" * 60_000)
        result = _evpay("config", "validate", str(config))
    finally:
        os.close(fd)
    assert result.returncode == 2
    assert "terminals.0.password" in _one_line(result)


@pytest.mark.parametrize("extra", [1, 2])
@pytest.mark.parametrize("quote", ["'", '"'])
def test_the_scanner_closes_a_multi_line_string_on_four_or_five_quotes(
    quote: str, extra: int
) -> None:
    """The scanner itself (not tomllib's RecursionError) refuses the nesting after the string."""
    from gateway.input_limits import Refused, check_toml_shape

    q3 = quote * 3
    with pytest.raises(Refused, match="nested deeper"):
        check_toml_shape(f"x = [{q3}a{q3}{quote * extra}, " + "[" * 40 + "]" * 40 + "]\n")
