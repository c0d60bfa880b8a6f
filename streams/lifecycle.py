"""Start and stop Kafka clients so none is ever left open.

aiokafka's `start()` can fail half-way (the broker is down, a name does not resolve,
authentication fails) with its connections and tasks already made; a client that is not
stopped then is an "Unclosed AIOKafkaConsumer" warning on exit and a leaked socket.
`running` stops (or closes) a client whether its start, the body or the stop fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

STOP_WAIT_S = 5.0  # for each last step of a stopping process (a commit, a goodbye)


class Startable(Protocol):
    async def start(self) -> Any: ...


C = TypeVar("C", bound=Startable)


async def shut(client: Any, within: float = STOP_WAIT_S) -> None:
    """Stop a consumer or producer, close an admin client, in at most `within` seconds;
    raises only when the caller itself is being cancelled.

    With the broker gone, aiokafka's consumer `stop()` looks for the group coordinator
    to leave the group for ever, or awaits the fetch it just cancelled and raises that
    CancelledError; a process that waited was killed at the end of its grace, and one
    that let the error through never stopped its producer. Past `within`, what is left
    (leaving the group, flushing) is given up and the connections are closed."""
    end = getattr(client, "stop", None) or getattr(client, "close", None)
    if end is None:
        return
    try:
        async with asyncio.timeout(within):
            await end()
    except TimeoutError:
        inner = getattr(client, "_client", None)  # aiokafka's connections
        if inner is not None and hasattr(inner, "close"):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await inner.close()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our own cancellation: pass it on
    except Exception:  # noqa: S110 - a client that fails to stop is as stopped as it gets
        pass


async def started(client: C, *, failed: Callable[[Exception], Exception] | None = None
                  ) -> C:
    """`client`, started; a start that fails stops it before raising. `failed` turns that
    failure into the caller's error (e.g. `BrokerUnavailable`)."""
    try:
        await client.start()
    except Exception as exc:
        await shut(client)
        if failed is None:
            raise
        raise failed(exc) from exc
    return client


@asynccontextmanager
async def running(client: C, *, failed: Callable[[Exception], Exception] | None = None
                  ) -> AsyncIterator[C]:
    """`client` started for the body and stopped after it, and after a failed start too."""
    await started(client, failed=failed)
    try:
        yield client
    finally:
        await shut(client)


async def at_stop(step: Awaitable[Any], what: str, log: logging.Logger) -> bool:
    """Run one last step of a process that stops (commit its offsets, say goodbye) for at
    most `STOP_WAIT_S`; False, with a warning, when it failed or timed out. With the
    broker gone, aiokafka's commit looks for the group coordinator for ever, and a worker
    waiting on it was killed at the end of its grace instead of stopping."""
    try:
        async with asyncio.timeout(STOP_WAIT_S):
            await step
        return True
    except Exception as exc:
        log.warning("%s not done at stop (%s); what it covers is redone after a restart",
                    what, str(exc) or "timed out")
        return False
