"""Our own failures (the broker or the store away) are retried until they pass: a result
that cost minutes of executor or test time is never thrown away for a hiccup."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

RETRY_CAP_S = 2.0  # a result waits at most this long after the broker is back


async def until_done(what: str, step: Callable[[], Awaitable[T]], log: logging.Logger,
                     cap_s: float = RETRY_CAP_S) -> T:
    """Run `step` until it succeeds, pausing 0.2 s, 0.4 s, ... up to `cap_s` between tries."""
    pause = 0.2
    while True:
        try:
            return await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, cap_s)
