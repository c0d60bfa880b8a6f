"""Our own failures (a send that timed out, a broker away, a full disk) are retried in
place with backoff until they succeed: the record being handled is never dead-lettered for
them, and nothing it was doing is dropped. Every step retried is idempotent.

Anything else that goes wrong while handling a valid record is a devline bug. It is retried
a few times (it may be a race), then reported as `Unexpected`, so the caller can park the
record in the dead-letter topic with the traceback instead of stalling every plan behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError

from devline.errors import DevlineError

T = TypeVar("T")
BUG_TRIES = 5


class Unexpected(Exception):
    """Handling a valid record failed for a reason that is neither the record's nor the
    broker's: a bug. Carries the last error."""


def transient(exc: BaseException) -> bool:
    """A failure of our surroundings that retrying can cure."""
    if isinstance(exc, DevlineError):
        return exc.retryable
    return isinstance(exc, KafkaError | OSError | TimeoutError | ConnectionError)


async def persist(op: Callable[[], Awaitable[T]], *, what: str, log: logging.Logger,
                  sleep: Callable[[float], Awaitable[None]] | None = None,
                  first: float = 0.1, cap: float = 2.0) -> T:
    """Run `op` until it succeeds; transient failures forever, others `BUG_TRIES` times."""
    pause = first
    failures = bugs = 0
    while True:
        try:
            return await op()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            if not transient(exc):
                bugs += 1
                log.error("%s failed (%s: %s); try %d of %d", what, type(exc).__name__, exc,
                          bugs, BUG_TRIES, exc_info=True)
                if bugs >= BUG_TRIES:
                    raise Unexpected(f"{type(exc).__name__}: {exc}") from exc
            else:
                log.warning("%s failed (%s: %s); retrying in %.1fs (failure %d)", what,
                            type(exc).__name__, exc, pause, failures,
                            exc_info=failures == 1 or failures % 20 == 0)
            await (sleep or asyncio.sleep)(pause)
            pause = min(pause * 2, cap)
