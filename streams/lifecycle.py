"""Start and stop Kafka clients so none is ever left open.

aiokafka's `start()` can fail half-way (the broker is down, a name does not resolve,
authentication fails) with its connections and tasks already made; a client that is not
stopped then is an "Unclosed AIOKafkaConsumer" warning on exit and a leaked socket.
`running` stops (or closes) a client whether its start, the body or the stop fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar


class Startable(Protocol):
    async def start(self) -> Any: ...


C = TypeVar("C", bound=Startable)


async def shut(client: Any) -> None:
    """Stop a consumer or producer, close an admin client; never raises."""
    end = getattr(client, "stop", None) or getattr(client, "close", None)
    if end is not None:
        with contextlib.suppress(Exception):
            await end()


@asynccontextmanager
async def running(client: C, *, failed: Callable[[Exception], Exception] | None = None
                  ) -> AsyncIterator[C]:
    """`client` started for the body and stopped after it, and after a failed start too.

    `failed` turns a failed start into the caller's error (e.g. `BrokerUnavailable`)."""
    try:
        await client.start()
    except Exception as exc:
        await shut(client)
        if failed is None:
            raise
        raise failed(exc) from exc
    try:
        yield client
    finally:
        await shut(client)
