"""The live view's WebSocket hub, over a real loopback socket (aiohttp's test server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from streams.observe.ws import Hub

TOKEN = "test-token"  # noqa: S105 - a test fixture, not a credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _hub(**kwargs: Any) -> Hub:
    kwargs.setdefault("tokens", [TOKEN])
    hub = Hub(**kwargs)
    plans: dict[str, dict[str, Any]] = {"abc": {"tasks": 3}, "xyz": {"tasks": 1}}
    hub.provide("plan:", lambda rest: plans.get(rest))
    hub.provide("workers", lambda rest: {"workers": []} if rest == "" else None)
    return hub


Scenario = Callable[[Hub, TestClient[web.Request, web.Application]], Awaitable[None]]


def run(scenario: Scenario, **hub_kwargs: Any) -> None:
    async def main() -> None:
        hub = _hub(**hub_kwargs)
        app = web.Application()
        app.router.add_get("/ws", hub.handle)
        async with TestClient(TestServer(app)) as client:
            try:
                await asyncio.wait_for(scenario(hub, client), 20)
            finally:
                await hub.close()

    asyncio.run(main())


async def recv(ws: aiohttp.ClientWebSocketResponse, wait_s: float = 2.0) -> dict[str, Any]:
    """The next JSON frame that is not an application heartbeat."""
    while True:
        msg = await ws.receive(timeout=wait_s)
        assert msg.type is WSMsgType.TEXT, msg
        frame: dict[str, Any] = msg.json()
        if frame["type"] != "heartbeat":
            return frame


async def connect(client: TestClient[web.Request, web.Application],
                  **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
    kwargs.setdefault("headers", AUTH)
    return await client.ws_connect("/ws", **kwargs)


async def subscribed(client: TestClient[web.Request, web.Application], channel: str,
                     **op: Any) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await connect(client)
    await ws.send_json({"op": "subscribe", "channel": channel, **op})
    return ws, await recv(ws)


def test_snapshot_then_deltas_with_increasing_seq() -> None:
    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        assert hub.publish("plan:abc", {"n": 0}) == 1  # before anyone listens
        ws, snap = await subscribed(client, "plan:abc")
        assert snap["type"] == "snapshot"
        assert (snap["channel"], snap["seq"], snap["data"]) == ("plan:abc", 1, {"tasks": 3})
        assert [hub.publish("plan:abc", {"n": n}) for n in (1, 2, 3)] == [2, 3, 4]
        frames = [await recv(ws) for _ in range(3)]
        assert [(f["type"], f["seq"], f["data"]["n"]) for f in frames] == [
            ("event", 2, 1), ("event", 3, 2), ("event", 4, 3)]
        assert hub.stats()["subscriptions"] == 1
        await ws.send_json({"op": "unsubscribe", "channel": "plan:abc"})
        await ws.send_json({"op": "ping"})
        assert (await recv(ws))["type"] == "pong"  # the unsubscribe was handled before
        hub.publish("plan:abc", {"n": 4})
        await ws.send_json({"op": "ping"})
        assert (await recv(ws))["type"] == "pong"  # not the event
        assert hub.stats()["subscriptions"] == 0

    run(scenario)


def test_since_seq_replays_exactly_the_missed_events() -> None:
    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        for n in range(1, 11):
            hub.publish("plan:abc", {"n": n})
        ws, first = await subscribed(client, "plan:abc", since_seq=7, epoch=hub.epoch)
        frames = [first, await recv(ws), await recv(ws)]
        assert [(f["type"], f["seq"], f["data"]["n"]) for f in frames] == [
            ("event", 8, 8), ("event", 9, 9), ("event", 10, 10)]
        hub.publish("plan:abc", {"n": 11})
        assert (await recv(ws))["seq"] == 11
        # nothing missed: nothing replayed, the next publish follows
        ws2 = await connect(client)
        await ws2.send_json({"op": "subscribe", "channel": "plan:abc", "since_seq": 11})
        await ws2.send_json({"op": "ping"})
        assert (await recv(ws2))["type"] == "pong"
        hub.publish("plan:abc", {"n": 12})
        assert (await recv(ws2))["seq"] == 12

    run(scenario)


def test_since_seq_too_old_or_from_another_epoch_gets_a_snapshot() -> None:
    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        for n in range(1, 21):
            hub.publish("plan:abc", {"n": n})
        ops: list[dict[str, Any]] = [
            {"since_seq": 5},  # 6..9 are gone from the replay buffer of 10
            {"since_seq": 15, "epoch": "another server"},
            {"since_seq": 99},  # ahead of this server: not its sequence
        ]
        for seq, op in enumerate(ops, start=20):
            ws, first = await subscribed(client, "plan:abc", **op)
            assert (first["type"], first["seq"], first["data"]) == ("snapshot", seq, {"tasks": 3})
            assert first["epoch"] == hub.epoch
            hub.publish("plan:abc", {"n": 0})
            assert (await recv(ws))["type"] == "event"
            await ws.close()
            await asyncio.sleep(0)

    run(scenario, replay_max=10)


def test_clients_see_only_their_channels() -> None:
    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        ws_a, snap_a = await subscribed(client, "plan:abc")
        ws_w, snap_w = await subscribed(client, "workers")
        assert snap_a["data"] == {"tasks": 3} and snap_w["data"] == {"workers": []}
        hub.publish("workers", {"w": 1})
        hub.publish("plan:abc", {"p": 1})
        hub.publish("plan:xyz", {"p": 2})
        hub.publish("workers", {"w": 2})
        assert [(f["channel"], f["data"]) for f in (await recv(ws_a),)] == [
            ("plan:abc", {"p": 1})]
        assert [(f["channel"], f["data"]) for f in (await recv(ws_w), await recv(ws_w))] == [
            ("workers", {"w": 1}), ("workers", {"w": 2})]
        for ws in (ws_a, ws_w):
            await ws.send_json({"op": "ping"})
            assert (await recv(ws))["type"] == "pong"  # nothing else was in between

    run(scenario)


def test_slow_client_gets_one_resync_and_memory_stays_bounded() -> None:
    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        ws, snap = await subscribed(client, "plan:abc")
        other, _ = await subscribed(client, "workers")
        assert snap["type"] == "snapshot"
        for n in range(1, 5001):  # the client reads nothing meanwhile
            hub.publish("plan:abc", {"n": n})
            assert hub.stats()["queued"] <= 8
            if n % 500 == 0:
                await asyncio.sleep(0)
        stats = hub.stats()
        assert stats["resyncs"] == 1
        assert stats["subscriptions"] == 1  # plan:abc is suspended, workers is not
        frames = []
        while (frame := await recv(ws))["type"] == "event":
            frames.append(frame)  # sent before the queue filled
        assert frame == {"type": "resync_required", "channel": "plan:abc"}
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
        await ws.send_json({"op": "ping"})
        assert (await recv(ws))["type"] == "pong"  # one notice, no events after it
        await ws.send_json({"op": "subscribe", "channel": "plan:abc"})
        again = await recv(ws)
        assert (again["type"], again["seq"]) == ("snapshot", 5000)
        hub.publish("plan:abc", {"n": 5001})
        assert (await recv(ws))["seq"] == 5001
        hub.publish("workers", {"w": 1})
        assert (await recv(other))["data"] == {"w": 1}  # the other client never noticed

    run(scenario, queue_max=8)


def test_publish_never_blocks_on_a_stuck_client() -> None:
    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        await subscribed(client, "plan:abc")  # this one stops reading
        await subscribed(client, "plan:xyz")
        payload = "x" * 1000
        for n in range(3000):  # fill the socket: the server's send waits for a drain
            hub.publish("plan:abc", {"n": n, "pad": payload})
            if n % 100 == 0:
                await asyncio.sleep(0.001)
        start = time.perf_counter()
        for n in range(100_000):
            hub.publish("plan:abc", {"n": n})
            hub.publish("plan:xyz", {"n": n})
        assert time.perf_counter() - start < 1.0
        assert hub.stats()["queued"] <= 2 * 256 + 2

    run(scenario)


def test_a_client_whose_socket_stays_full_is_dropped_as_slow() -> None:
    clock = FakeClock()

    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        ws, _ = await subscribed(client, "plan:abc")
        payload = "x" * 60_000
        for n in range(200):  # 12 MB, more than loopback buffers hold; never read
            hub.publish("plan:abc", {"n": n, "pad": payload})
            await asyncio.sleep(0.001)
        assert hub.stats()["queued"] > 0
        await ws.ping()  # alive, so not idle: just not reading
        await asyncio.sleep(0.1)
        clock.now += 61
        for _ in range(100):
            if hub.stats()["clients"] == 0:
                break
            await asyncio.sleep(0.02)
        assert hub.stats()["dropped_slow"] == 1
        assert hub.stats()["dropped_idle"] == 0

    run(scenario, clock=clock, queue_max=1000, heartbeat_s=30)


def test_idle_client_is_dropped_with_4408() -> None:
    clock = FakeClock()

    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        ws, _ = await subscribed(client, "workers")
        clock.now += 8
        await ws.send_json({"op": "ping"})
        assert (await recv(ws))["type"] == "pong"
        clock.now += 7  # 15 s since connecting, 7 since the ping
        await asyncio.sleep(1.1)  # a tick or more
        assert hub.stats()["clients"] == 1
        clock.now += 4  # 11 s of silence
        while (msg := await ws.receive(timeout=2)).type is WSMsgType.TEXT:
            assert msg.json()["type"] == "heartbeat"  # the clock jumped past heartbeat_s
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4408, "idle")
        await asyncio.sleep(0.05)
        assert hub.stats() | {"dropped_idle": 1, "clients": 0} == hub.stats()

    # protocol pongs count as activity: keep aiohttp's pings (heartbeat_s) out of the way
    run(scenario, clock=clock, idle_timeout_s=10, heartbeat_s=15)


def test_application_heartbeat_carries_the_seqs() -> None:
    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        hub.publish("plan:abc", {"n": 1})
        hub.publish("plan:abc", {"n": 2})
        ws, _ = await subscribed(client, "plan:abc")
        while True:
            msg = await ws.receive(timeout=2)
            frame = msg.json()
            if frame["type"] == "heartbeat":
                break
        assert frame["seq_by_channel"] == {"plan:abc": 2}
        assert frame["epoch"] == hub.epoch
        assert abs(frame["at"] - time.time()) < 5

    run(scenario, heartbeat_s=0.1)


def test_auth_origin_and_capacity() -> None:
    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        assert (await client.get("/ws")).status == 401
        bad = {"Authorization": "Bearer wrong"}
        assert (await client.get("/ws", headers=bad)).status == 401
        assert (await client.get("/ws", params={"token": "wrong"})).status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws")
        assert refused.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await connect(client, origin="https://evil.example")
        assert refused.value.status == 403
        by_header = await connect(client, origin="https://view.example")
        by_query = await client.ws_connect("/ws", params={"token": TOKEN})
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await connect(client)
        assert refused.value.status == 503  # max_clients=2
        for ws in (by_header, by_query):
            await ws.send_json({"op": "ping"})
            assert (await recv(ws))["type"] == "pong"

    run(scenario, origins=["https://view.example"], max_clients=2)


def test_no_tokens_means_no_auth() -> None:
    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        ws = await client.ws_connect("/ws")
        await ws.send_json({"op": "ping"})
        assert (await recv(ws))["type"] == "pong"

    run(scenario, tokens=())


def test_bad_requests_get_errors_not_disconnects() -> None:
    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        ws = await connect(client)
        for sent, message in (
            ("{not json", "invalid JSON"),
            ("[1]", "expected a JSON object"),
            ('{"op": "dance"}', "unknown op 'dance'"),
            ('{"op": "subscribe", "channel": "plan:nope"}', "unknown channel"),
            ('{"op": "subscribe", "channel": "deploys:x"}', "unknown channel"),
            ('{"op": "subscribe", "channel": "workersX"}', "unknown channel"),
            ('{"op": "subscribe"}', "channel must be a short string"),
            ('{"op": "subscribe", "channel": "plan:abc", "since_seq": "4"}',
             "since_seq must be an integer"),
        ):
            await ws.send_str(sent)
            frame = await recv(ws)
            assert (frame["type"], frame["message"]) == ("error", message), sent
        await ws.send_bytes(b"\x00")
        assert (await recv(ws))["message"] == "text frames only"
        await ws.send_json({"op": "subscribe", "channel": "plan:xyz"})
        assert (await recv(ws))["data"] == {"tasks": 1}
        assert hub.stats()["subscriptions"] == 1

    run(scenario)


def test_close_drops_every_client_with_1001() -> None:
    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        ws, _ = await subscribed(client, "workers")
        await hub.close()
        msg = await ws.receive(timeout=2)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1001)
        assert hub.stats()["clients"] == 0
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await connect(client)
        assert refused.value.status == 503

    run(scenario)


def test_a_dead_client_is_dropped_by_the_protocol_heartbeat_and_counted() -> None:
    """A client that never answers pings (a dead peer) is closed once its pong is late."""

    async def scenario(hub: Hub, client: TestClient[web.Request, web.Application]) -> None:
        dead = await connect(client, autoping=False)  # never answers the server's pings
        await dead.send_json({"op": "subscribe", "channel": "plan:abc"})
        for _ in range(100):
            if hub.stats()["dropped_dead"] == 1:
                break
            await asyncio.sleep(0.05)
        assert hub.stats()["dropped_dead"] == 1 and hub.stats()["clients"] == 0

    run(scenario, heartbeat_s=0.5, idle_timeout_s=60.0)
