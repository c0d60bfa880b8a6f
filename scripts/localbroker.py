"""A benchmark's broker: the one given with `--bootstrap`, else a local KRaft node of its
own on `--port` (started with scripts/kafka-local, stopped afterwards unless kept)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KAFKA_LOCAL = str(Path(__file__).resolve().parent / "kafka-local")


class BrokerError(RuntimeError):
    """The local broker did not start (its script's error output is the message)."""


@contextmanager
def broker(port: int, bootstrap: str | None, *, keep: bool = False) -> Iterator[str]:
    """The bootstrap address to use for the block."""
    if bootstrap is not None:
        yield bootstrap
        return
    env = {**os.environ, "DEVLINE_KAFKA_PORT": str(port)}
    up = subprocess.run([KAFKA_LOCAL, "start"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        raise BrokerError(up.stderr.strip() or f"kafka-local start exited {up.returncode}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if not keep:
            subprocess.run([KAFKA_LOCAL, "stop"], env=env, capture_output=True)
