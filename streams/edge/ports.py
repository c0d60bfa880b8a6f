"""The narrow interfaces the edge talks through, so it runs on Faust or on in-memory fakes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from devline.settings import Settings
from schemas.codec import Codec
from streams.artifacts import ArtifactStore
from streams.emit import Emitter, stored_by_reference


class Table(Protocol):
    """The part of a Faust table (or a dict) the edge uses."""

    def get(self, key: str, default: Any = None, /) -> Any: ...

    def __setitem__(self, key: str, value: Any) -> None: ...

    def __delitem__(self, key: str) -> None: ...

    def items(self) -> Iterable[tuple[str, Any]]: ...

    def keys(self) -> Iterable[str]: ...


@dataclass(frozen=True)
class RawRecord:
    """A record as it came off a topic (what a Faust message or aiokafka record holds)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()

    @classmethod
    def of(cls, message: Any) -> RawRecord:
        return cls(message.topic, message.partition, message.offset, message.key,
                   message.value, tuple(message.headers or ()))

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return None


# Deliveries of the sends made while one record is handled (per asyncio task): awaited
# together at its end instead of one round trip each.
_PENDING: ContextVar[list[Any] | None] = ContextVar("pending_deliveries", default=None)


async def _delivered(delivery: Any) -> None:
    if delivery is None:
        return
    pending = _PENDING.get()
    if pending is None:
        await delivery
    else:
        pending.append(delivery)


async def all_delivered(op: Callable[[], Awaitable[None]],
                        urge: Callable[[], None] | None = None) -> None:
    """Run `op`; its sends go out at once and are awaited together at the end, so one
    record costs one round trip, not one per send. Any failed send fails the whole `op`,
    which is retried (every effect is idempotent). Per partition the producer keeps the
    order the sends were made in. `urge`, if given, is called before the wait (to send
    without the producer's linger)."""
    pending: list[Any] = []
    token = _PENDING.set(pending)
    try:
        await op()
    finally:
        _PENDING.reset(token)
    if pending and urge is not None:
        urge()
    for delivery in pending:
        await delivery


@dataclass
class Ports:
    """Everything the edge reads and writes."""

    settings: Settings
    codec: Codec
    emit: Emitter
    store: ArtifactStore
    plans: Table
    tasks: Table
    cache: Table
    clock: Callable[[], float] = time.time  # wall seconds (event timestamps, timers)
    sleep: Callable[[float], Awaitable[None]] | None = None  # for retry pauses

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def publish(self, event_type: str, record: dict[str, Any], **where: Any) -> None:
        """Send an event and wait until the broker has it. Effects publish this way, so a
        send that fails fails the effect, which is retried, instead of vanishing after
        the record was committed."""
        await _delivered(await self.emit.event(event_type, record, **where))

    async def publish_dead_letter(self, value: bytes | None, key: bytes | None,
                                  headers: list[tuple[str, bytes]]) -> None:
        """Send a dead letter and wait until the broker has it. A value (or key) too big to
        carry is stored in the artifact store first and sent as its head plus a reference,
        so no record is too big to dead-letter. Store and send are one effect: retried or
        redone after a crash, both run again (storing by hash is idempotent)."""
        letter = await stored_by_reference(self.store, value, key, headers)
        await _delivered(await self.emit.dead_letter(letter.value, letter.key,
                                                     letter.headers))
