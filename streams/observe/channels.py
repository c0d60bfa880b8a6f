"""What the WebSocket hub keeps: channels with their replay buffers, one encoded frame per
published event whatever the number of subscribers, and each client's bounded queue.
Plain data; the hub (`streams.observe.ws`) drives it."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger("devline.observe.ws")


def encode(message: dict[str, Any]) -> str:
    # allow_nan=False: a NaN would make the browser's JSON.parse drop the whole frame
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


@dataclass(slots=True, eq=False)
class Event:
    """One published delta, encoded at most once whatever the number of subscribers."""

    channel: str
    seq: int
    data: dict[str, Any]
    _frame: str | None = None

    def frame(self) -> str:
        if self._frame is None:
            try:
                self._frame = encode(
                    {"type": "event", "channel": self.channel, "seq": self.seq, "data": self.data}
                )
            except (TypeError, ValueError):
                log.exception("event %d of %s is not JSON", self.seq, self.channel)
                self._frame = encode(
                    {"type": "error", "message": f"event {self.seq} is not JSON",
                     "channel": self.channel}
                )
        return self._frame


@dataclass(slots=True, eq=False)
class Channel:
    # Lives as long as the hub once published to: its seq must never restart while the
    # hub runs. Their number is that of the plans, metrics and rollouts of this process.
    replay: deque[Event]
    seq: int = 0
    subscribers: set[Client] = field(default_factory=set)

    def since(self, seq: int) -> list[Event] | None:
        """Return the events after `seq`, or None when some are no longer kept."""
        missed = self.seq - seq
        if missed < 0 or missed > len(self.replay):
            return None
        return list(itertools.islice(self.replay, len(self.replay) - missed, None))


Item = Event | dict[str, Any]


@dataclass(slots=True, eq=False)
class Client:
    ws: web.WebSocketResponse
    peer: str
    last_seen: float
    last_beat: float
    transport: asyncio.Transport | None = None
    queue: deque[Item] = field(default_factory=deque)
    subs: set[str] = field(default_factory=set)
    resync: dict[str, None] = field(default_factory=dict)  # ordered set of notices to send
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sending_since: float | None = None
    pump: asyncio.Task[None] | None = None
    closer: asyncio.Task[None] | None = None

    def next_frame(self) -> str | None:
        if self.resync:
            channel = next(iter(self.resync))
            del self.resync[channel]
            return encode({"type": "resync_required", "channel": channel})
        if not self.queue:
            return None
        item = self.queue.popleft()
        if isinstance(item, Event):
            return item.frame()
        try:
            return encode(item)
        except (TypeError, ValueError):
            log.exception("%s frame for %s is not JSON", item.get("type"), item.get("channel"))
            return encode({"type": "error", "message": "snapshot is not JSON",
                            "channel": item.get("channel")})


@dataclass(slots=True)
class Counters:
    dropped_slow: int = 0
    dropped_idle: int = 0
    dropped_dead: int = 0  # no pong to a protocol ping: aiohttp closed it (1006)
    resyncs: int = 0


def channel_of(item: Item) -> str | None:
    if isinstance(item, Event):
        return item.channel
    channel = item.get("channel")
    return channel if isinstance(channel, str) else None


def names(channels: Iterable[str | None]) -> list[str]:
    return sorted(c for c in channels if c is not None)
