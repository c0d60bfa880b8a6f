"""Start `devline run` as a child process group (used by demo, tests, benchmarks, chaos runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from devline.settings import Settings
from devline.supervisor import child_env

ROOT = Path(__file__).resolve().parents[1]
_LIVE: set[int] = set()  # process groups started here and not yet reaped


def kill_all() -> int:
    """SIGKILL every process group `running` started that is still alive (for finalizers:
    a test interrupted by a timeout inside its clean-up must not leave a pipeline behind)."""
    killed = 0
    for pgid in list(_LIVE):
        try:
            os.killpg(pgid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
        _LIVE.discard(pgid)
    return killed


@contextmanager
def running(settings: Settings, args: Sequence[str], log: Path | None = None,
            stop_timeout: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """`devline run ARGS` in its own process group; SIGTERM on exit, SIGKILL if it hangs."""
    with open(log or os.devnull, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "devline", "run", *args],
                                env=child_env(settings), stdout=out, stderr=subprocess.STDOUT,
                                cwd=ROOT, start_new_session=True)
        _LIVE.add(proc.pid)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=stop_timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            _LIVE.discard(proc.pid)
