"""SIGKILL a writer mid-stream, many times: the database must hold whole steps only."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gateway.store import Store
from tests.helpers import subprocess_env


def _kill_writer_at_random(path: Path, rng: random.Random) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_writer", str(path)],
        stdout=subprocess.PIPE,
        env=subprocess_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"running"
    time.sleep(rng.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_sigkill_between_and_during_steps_leaves_whole_steps_only(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "crash.sqlite3"
    for _round in range(4):
        _kill_writer_at_random(path, rng)
        store = Store.open(path)  # reopen: recovery from the WAL
        assert store.verify_journal().ok, f"seed {seed}"
        store.close()
        conn = sqlite3.connect(path)
        steps = [
            int(k.split("-")[1]) for (k,) in conn.execute("SELECT DISTINCT step_key FROM journal")
        ]
        assert steps, f"seed {seed}"
        for n in steps:
            sid = f"s{n % 50}"
            assert (
                conn.execute("SELECT count(*) FROM payments WHERE id = ?", (f"p{n}",)).fetchone()[0]
                == 1
            )
            assert (
                conn.execute(
                    "SELECT count(*) FROM journal WHERE step_key = ?", (f"step-{n}",)
                ).fetchone()[0]
                == 3
            )
            assert (
                conn.execute(
                    "SELECT count(*) FROM outbox WHERE step_key = ?", (f"step-{n}",)
                ).fetchone()[0]
                == 2
            )
            assert (
                conn.execute("SELECT count(*) FROM sessions WHERE id = ?", (sid,)).fetchone()[0]
                == 1
            )
        # nothing from a step that did not commit
        assert conn.execute("SELECT count(*) FROM payments").fetchone()[0] == len(steps), (
            f"seed {seed}"
        )
        assert conn.execute("SELECT count(*) FROM journal").fetchone()[0] == 3 * len(steps), (
            f"seed {seed}"
        )
        conn.close()
        # the next writer restarts numbering at 0: those keys exist, so clear for a fresh round
        path.unlink()
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
