"""The WebSocket hub of the live view: channels, snapshots, sequenced deltas, resume.

Protocol: JSON text frames on `GET /ws`.

Client to server:
- `{"op": "subscribe", "channel": "plan:abc", "since_seq": 41, "epoch": "..."}`;
  `since_seq` and `epoch` are optional. The server answers with
  `{"type": "snapshot", "channel", "seq", "epoch", "data"}` (the provider's snapshot,
  current as of `seq`), then sends `{"type": "event", "channel", "seq", "data"}` for each
  publish, `seq` counting 1, 2, ... per channel. With `since_seq`, when every later event
  is still in the replay buffer (and `epoch`, if given, is this server's), the missed
  events are replayed as `event` frames instead of a snapshot (none if nothing was
  missed); otherwise a snapshot comes. Tell the two apart by `type`. A server restart
  starts a new `epoch` and new sequences, so send the `epoch` of the last snapshot or
  heartbeat with `since_seq`. Subscribing again to a subscribed channel starts it over.
- `{"op": "unsubscribe", "channel"}`: no answer.
- `{"op": "ping"}`: answered with `{"type": "pong", "at"}`.

Server to client, besides the above:
- `{"type": "heartbeat", "at", "epoch", "seq_by_channel": {channel: seq}}` every
  `heartbeat_s`, in order with the events, so each `seq` is the last one sent to this
  client on that channel. Browsers cannot send protocol pings, hence this one; the server
  also sends protocol pings (aiohttp `heartbeat`) and drops a client whose pong is late.
- `{"type": "resync_required", "channel"}`: the client's queue was full and was cleared;
  no more events of that channel come until the client subscribes to it again. Sent once
  per channel.
- `{"type": "error", "message", "channel"?}`: bad JSON, unknown op, unknown channel, a
  failed snapshot. The connection stays open.
`at` is wall-clock time in seconds since the epoch.

Connection: the token goes in `Authorization: Bearer <t>` or `?token=<t>` (HTTP 401
without a valid one; the query form ends up in access logs that print the request line,
so prefer the header). A browser's `Origin` must be in the allow-list when one is set
(HTTP 403; requests without `Origin` do not come from a browser page and pass). HTTP 503
over `max_clients`. A client that sends nothing at all (text, ping or pong) for
`idle_timeout_s` is closed with code 4408 "idle"; one whose socket accepts nothing for
`idle_timeout_s` with 4429 "slow"; all of them with 1001 when the hub closes.

Memory per client is bounded by `queue_max` queued frames plus aiohttp's write buffer;
per channel by `replay_max` events. `publish` must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from streams.observe.channels import (
    Channel,
    Client,
    Counters,
    Event,
    Item,
    channel_of,
    names,
)

log = logging.getLogger("devline.observe.ws")

Snapshot = Callable[[str], dict[str, Any] | None]

CLOSE_IDLE = 4408
CLOSE_SLOW = 4429
MAX_SUBSCRIPTIONS = 256  # per client: bounds its pending resync notices too
MAX_CHANNEL_CHARS = 256
MAX_INBOUND_BYTES = 64 * 1024  # clients only send small ops
CLOSE_TIMEOUT_S = 5.0  # for a peer to answer our close frame before the socket is cut


class Hub:
    """Fan published deltas out to WebSocket subscribers; see the module docstring."""

    def __init__(
        self,
        *,
        tokens: Collection[str] = (),
        origins: Collection[str] = (),
        queue_max: int = 256,
        replay_max: int = 1000,
        heartbeat_s: float = 15.0,
        idle_timeout_s: float = 60.0,
        max_clients: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if queue_max < 1 or replay_max < 0 or heartbeat_s <= 0 or idle_timeout_s <= 0:
            raise ValueError("queue_max >= 1, replay_max >= 0, positive heartbeat and timeout")
        self._tokens = [t.encode() for t in tokens]
        self._origins = {_normal_origin(o) for o in origins}
        self._queue_max = queue_max
        self._replay_max = replay_max
        self._heartbeat_s = heartbeat_s
        self._idle_timeout_s = idle_timeout_s
        self._max_clients = max_clients
        self._clock = clock
        self._tick_s = max(0.01, min(1.0, heartbeat_s / 4, idle_timeout_s / 4))
        self.epoch = secrets.token_hex(8)
        self._providers: dict[str, Snapshot] = {}
        self._channels: dict[str, Channel] = {}
        self._clients: set[Client] = set()
        self._counters = Counters()
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False
        if not self._tokens:
            log.warning("live view WebSocket hub runs without authentication (no tokens)")

    # -- the service's side ---------------------------------------------------------------

    def provide(self, prefix: str, snapshot: Snapshot) -> None:
        """Serve snapshots of the channels starting with `prefix` (longest prefix wins)."""
        self._providers[prefix] = snapshot

    def publish(self, channel: str, data: dict[str, Any]) -> int:
        """Number, keep and fan out one delta; return its seq. Never waits.

        Update what the channel's snapshot provider reads before publishing, so a
        snapshot taken at seq N contains every event up to N. Do not mutate `data` later.
        """
        ch = self._channel(channel)
        ch.seq += 1
        event = Event(channel, ch.seq, data)
        ch.replay.append(event)
        overflowed = [c for c in ch.subscribers if not self._offer(c, event)]
        for client in overflowed:
            self._overflow(client, channel)
        return ch.seq

    def stats(self) -> dict[str, int]:
        """Counters for /metrics: clients, subscriptions, drops, resyncs, queued frames."""
        return {
            "clients": len(self._clients),
            "subscriptions": sum(len(c.subs) for c in self._clients),
            "dropped_slow": self._counters.dropped_slow,
            "dropped_idle": self._counters.dropped_idle,
            "dropped_dead": self._counters.dropped_dead,
            "resyncs": self._counters.resyncs,
            "queued": sum(len(c.queue) + len(c.resync) for c in self._clients),
        }

    async def close(self) -> None:
        """Refuse new clients, close every connection (1001) and stop the timers."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        closers = []
        for client in list(self._clients):
            self._drop(client, WSCloseCode.GOING_AWAY, "server shutdown")
            if client.closer is not None:
                closers.append(client.closer)
        await asyncio.gather(*closers, return_exceptions=True)

    # -- the connection -------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve `GET /ws`: check token, Origin and capacity, then run the connection."""
        peer = request.remote or "?"
        if not self._authorized(request):
            log.warning("live view: refused %s: missing or wrong token", peer)
            return web.Response(status=401, text="token required",
                                headers={"WWW-Authenticate": 'Bearer realm="devline"'})
        origin = request.headers.get("Origin")
        if self._origins and origin is not None and _normal_origin(origin) not in self._origins:
            log.warning("live view: refused %s: Origin %r not allowed", peer, origin[:200])
            return web.Response(status=403, text="origin not allowed")
        if self._closed or len(self._clients) >= self._max_clients:
            return web.Response(status=503, text="too many clients",
                                headers={"Retry-After": "5"})
        ws = web.WebSocketResponse(
            heartbeat=self._heartbeat_s,
            autoping=False,  # so that pongs count as activity; pings are answered below
            max_msg_size=MAX_INBOUND_BYTES,
            timeout=CLOSE_TIMEOUT_S,
        )
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="WebSocket upgrade expected")
        now = self._clock()
        client = Client(ws=ws, peer=peer, last_seen=now, last_beat=now,
                         transport=request.transport)
        self._clients.add(client)  # before any await: max_clients holds under a burst
        self._start_ticker()
        try:
            await ws.prepare(request)
            client.pump = asyncio.create_task(self._pump(client))
            await self._read(client)
        finally:
            if client.closer is None and ws.close_code == 1006:  # pong overdue: dead peer
                self._counters.dropped_dead += 1
                log.info("live view: dropped %s: no pong to the heartbeat ping", client.peer)
            self._forget(client)
            if client.pump is not None and client.pump is not asyncio.current_task():
                client.pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await client.pump
            if client.closer is not None:
                await client.closer
        return ws

    def _authorized(self, request: web.Request) -> bool:
        if not self._tokens:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        given = value.strip() if scheme.lower() == "bearer" else request.query.get("token", "")
        if not given:
            return False
        given_b = given.encode()
        # every token compared, in constant time each: timing tells nothing about which
        return any([hmac.compare_digest(given_b, t) for t in self._tokens])

    async def _read(self, client: Client) -> None:
        ws = client.ws
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                            WSMsgType.ERROR):
                return
            client.last_seen = self._clock()
            if msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is WSMsgType.TEXT:
                self._on_text(client, msg.data)
            elif msg.type is WSMsgType.BINARY:
                self._reply(client, {"type": "error", "message": "text frames only"})

    async def _pump(self, client: Client) -> None:
        """Send the client's queue in order; the only task that sends data frames."""
        ws = client.ws
        while True:
            await client.wake.wait()
            client.wake.clear()
            while (frame := client.next_frame()) is not None:
                client.sending_since = self._clock()
                try:
                    await ws.send_str(frame)
                except (ConnectionError, RuntimeError):
                    return  # the reader sees the connection go and cleans up
                finally:
                    client.sending_since = None

    def _drop(self, client: Client, code: int, reason: str) -> None:
        if client.closer is not None:
            return
        self._forget(client)
        if client.pump is not None and client.pump is not asyncio.current_task():
            client.pump.cancel()  # it may be stuck in a drain that never ends
        client.closer = asyncio.create_task(self._close_ws(client, code, reason))

    async def _close_ws(self, client: Client, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await client.ws.close(code=code, message=reason.encode())
        except TimeoutError:
            if client.transport is not None:
                client.transport.abort()

    def _forget(self, client: Client) -> None:
        for channel in client.subs:
            self._leave(client, channel)
        client.subs.clear()
        client.queue.clear()
        client.resync.clear()
        self._clients.discard(client)

    # -- timers ---------------------------------------------------------------------------

    def _start_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self._tick()
            except Exception:
                log.exception("live view: tick failed")

    def _tick(self) -> None:
        now = self._clock()
        for client in list(self._clients):
            if client.closer is not None or client.pump is None:
                continue
            if (client.sending_since is not None
                    and now - client.sending_since >= self._idle_timeout_s):
                log.info("live view: dropping %s: not reading", client.peer)
                self._counters.dropped_slow += 1
                self._drop(client, CLOSE_SLOW, "slow")
            elif now - client.last_seen >= self._idle_timeout_s:
                log.info("live view: dropping %s: idle", client.peer)
                self._counters.dropped_idle += 1
                self._drop(client, CLOSE_IDLE, "idle")
            elif now - client.last_beat >= self._heartbeat_s:
                client.last_beat = now
                seqs = {ch: self._channels[ch].seq for ch in sorted(client.subs)}
                self._reply(client, {"type": "heartbeat", "at": time.time(),
                                     "epoch": self.epoch, "seq_by_channel": seqs})

    # -- operations -----------------------------------------------------------------------

    def _on_text(self, client: Client, text: str) -> None:
        if client.closer is not None:
            return  # being dropped: read on only to see the close
        try:
            op = json.loads(text)
        except ValueError:
            self._reply(client, {"type": "error", "message": "invalid JSON"})
            return
        if not isinstance(op, dict):
            self._reply(client, {"type": "error", "message": "expected a JSON object"})
            return
        kind = op.get("op")
        if kind == "ping":
            self._reply(client, {"type": "pong", "at": time.time()})
            return
        if kind not in ("subscribe", "unsubscribe"):
            self._reply(client, {"type": "error", "message": f"unknown op {str(kind)[:64]!r}"})
            return
        channel = op.get("channel")
        if not isinstance(channel, str) or not 0 < len(channel) <= MAX_CHANNEL_CHARS:
            self._reply(client, {"type": "error", "message": "channel must be a short string"})
            return
        if kind == "unsubscribe":
            if channel in client.subs:
                client.subs.discard(channel)
                self._leave(client, channel)
            client.resync.pop(channel, None)
            return
        since = op.get("since_seq")
        epoch = op.get("epoch")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            self._reply(client, {"type": "error", "message": "since_seq must be an integer",
                                 "channel": channel})
            return
        self._subscribe(client, channel, since, epoch if isinstance(epoch, str) else None)

    def _subscribe(self, client: Client, channel: str, since: int | None,
                   epoch: str | None) -> None:
        found = self._provider(channel)
        if found is None:
            self._reply(client, {"type": "error", "message": "unknown channel",
                                 "channel": channel})
            return
        if channel not in client.subs and len(client.subs) >= MAX_SUBSCRIPTIONS:
            self._reply(client, {"type": "error", "message": "too many subscriptions",
                                 "channel": channel})
            return
        provider, rest = found
        client.resync.pop(channel, None)
        existing = self._channels.get(channel)
        missed = None
        if since is not None and existing is not None and epoch in (None, self.epoch):
            missed = existing.since(since)
            # a replay longer than the room left would overflow at once: snapshot instead
            if missed is not None and len(missed) + len(client.queue) > self._queue_max:
                missed = None
        if missed is not None:
            items: list[Item] = list(missed)
        else:
            try:
                data = provider(rest)
            except Exception:
                log.exception("live view: snapshot of %s failed", channel)
                self._reply(client, {"type": "error", "message": "snapshot failed",
                                     "channel": channel})
                return
            if data is None:
                self._reply(client, {"type": "error", "message": "unknown channel",
                                     "channel": channel})
                return
            seq = existing.seq if existing is not None else 0
            items = [{"type": "snapshot", "channel": channel, "seq": seq,
                      "epoch": self.epoch, "data": data}]
        ch = self._channel(channel)
        client.subs.add(channel)
        ch.subscribers.add(client)
        for item in items:
            if not self._offer(client, item):
                self._overflow(client, channel)
                return

    def _provider(self, channel: str) -> tuple[Snapshot, str] | None:
        best = max((p for p in self._providers if channel.startswith(p)), key=len, default=None)
        if best is None:
            return None
        return self._providers[best], channel[len(best):]

    # -- queues ---------------------------------------------------------------------------

    def _offer(self, client: Client, item: Item) -> bool:
        """Queue a frame; False when the queue is full (the caller then overflows it)."""
        if len(client.queue) >= self._queue_max:
            return False
        client.queue.append(item)
        client.wake.set()
        return True

    def _reply(self, client: Client, message: dict[str, Any]) -> None:
        """Queue a frame of no channel, making room by a resync when needed."""
        if not self._offer(client, message):
            self._overflow(client, None)
            self._offer(client, message)

    def _overflow(self, client: Client, channel: str | None) -> None:
        """Clear a full queue; every channel that lost frames must be subscribed again."""
        lost = {channel_of(item) for item in client.queue}
        lost.add(channel)
        client.queue.clear()
        for name in names(lost):
            if name in client.subs:
                client.subs.discard(name)
                self._leave(client, name)
                client.resync[name] = None
                self._counters.resyncs += 1
        client.wake.set()

    def _channel(self, name: str) -> Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = Channel(replay=deque(maxlen=self._replay_max))
        return ch

    def _leave(self, client: Client, channel: str) -> None:
        ch = self._channels.get(channel)
        if ch is None:
            return
        ch.subscribers.discard(client)
        if not ch.subscribers and ch.seq == 0:
            del self._channels[channel]  # subscribed to, never published: nothing to keep


def _normal_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()
