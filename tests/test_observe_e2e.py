"""`devline observe` against the real broker: a plan through the pipeline, the service
in-process on a free port, scraped, probed and subscribed to; windows rebuilt after a
restart exactly as an uninterrupted run writes them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from agents.metrics import Aggregator, Point, WindowSpec
from agents.planning import plan_record
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import produce
from streams.observe.service import ObserveService
from streams.observe.web import make_app, make_hub, serve
from streams.observe.windows import to_avro
from tests.harness import events, running_pipeline, wait_for

ROOT = Path(__file__).resolve().parents[1]
SMALL = (WindowSpec(1, None, 0), WindowSpec(2, 1, 0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def observing(settings: Settings, specs: Sequence[WindowSpec] = SMALL, idle_ms: int = 1_000,
              port: int | None = None) -> Iterator[tuple[ObserveService, str]]:
    """The observe service and its web app on an event loop of their own (a thread)."""
    port = port or free_port()
    made: dict[str, Any] = {}
    ready = threading.Event()

    async def main() -> None:
        service = ObserveService(settings, specs=specs, idle_ms=idle_ms)
        hub = make_hub(service)
        runner = await serve(make_app(service, hub), "127.0.0.1", port)
        made.update(service=service, loop=asyncio.get_running_loop())
        ready.set()
        try:
            await service.run()
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(30), "observe service did not start"
    service: ObserveService = made["service"]
    try:
        yield service, f"http://127.0.0.1:{port}"
    finally:
        made["loop"].call_soon_threadsafe(service.stop)
        thread.join(30)
        assert not thread.is_alive(), "observe service did not stop"


def get(url: str) -> tuple[int, str]:
    async def go() -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            return r.status, await r.text()

    return asyncio.run(go())


def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout:g}s: {what}")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def slow_plan() -> dict[str, Any]:
    plan = yaml.safe_load((ROOT / "examples" / "calc-plan.yaml").read_text())
    for f in plan["files"]:
        f["simulate"] = {"duration_s": 1.0}
    plan.setdefault("options", {})["integration"] = "off"
    return plan


async def watch_plan(base: str, plan_id: str, until_status: str, within: float
                     ) -> list[dict[str, Any]]:
    """Subscribe to `plan:<id>`; frames until a delta says the plan reached `until_status`."""
    frames: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as s, s.ws_connect(base + "/ws") as ws:
        await ws.send_json({"op": "subscribe", "channel": f"plan:{plan_id}"})
        async with asyncio.timeout(within):
            async for msg in ws:
                frame = json.loads(msg.data)
                frames.append(frame)
                if frame["type"] == "event" and frame["data"]["plan_status"] == until_status:
                    break
    return frames


def test_observe_serves_metrics_health_plans_windows_and_live_deltas(topics: Settings) -> None:
    settings = topics
    plan = slow_plan()
    record = plan_record(plan)
    plan_id = str(record["plan_id"])
    with observing(settings) as (_, base), running_pipeline(settings, workers=2):
        until(lambda: get(base + "/healthz")[0] == 200, 60, "/healthz 200")
        asyncio.run(produce(settings, T.PLANS, "PlanSubmitted", record, key=plan_id))
        until(lambda: get(f"{base}/api/plans/{plan_id}")[0] == 200, 60, "plan projected")
        frames = asyncio.run(watch_plan(base, plan_id, "done", 120))
        wait_for(settings, plan_id, {"PlanCompleted"})
        files = len(plan["files"])

        def scraped() -> dict[Any, float] | None:
            got = samples(get(base + "/metrics")[1])
            verified = got.get(("devline_tasks", (("state", "verified"),)))
            return got if verified == files else None

        got = until(scraped, 30, f"devline_tasks{{state=verified}} == {files}")
        _, body = get(f"{base}/api/plans/{plan_id}")
        summary = json.loads(body)
        windows = until(lambda: [v for _, et, v in events(settings, T.METRICS_WINDOWS, idle=0.5)
                                 if et == "MetricAggregate"], 30, "a MetricAggregate")

    assert summary["status"] == "done" and summary["tasks"] == {"verified": files}
    assert got[("devline_executor_seconds_count", (("executor", "demo"),))] >= files
    assert got[("devline_plans", (("status", "done"),))] == 1
    assert got[("devline_workers", (("kind", "current"),))] >= 1
    assert ("devline_consumer_lag", (("topic", "devline.events"),)) in got
    assert got[("devline_qa_checks_total", (("status", "pass"),))] > 0
    agg = windows[0]
    assert agg["key"].split("|")[0] == agg["metric"] and agg["count"] > 0
    assert agg["window_size_ms"] in (1_000, 2_000)
    # The subscriber got the plan's snapshot, then numbered deltas of its tasks.
    assert frames[0]["type"] == "snapshot" and frames[0]["data"]["plan_id"] == plan_id
    deltas = [f for f in frames if f["type"] == "event"]
    assert deltas and all(f["channel"] == f"plan:{plan_id}" for f in deltas)
    assert [f["seq"] for f in deltas] == list(range(deltas[0]["seq"],
                                                     deltas[0]["seq"] + len(deltas)))
    assert {d["data"]["type"] for d in deltas} >= {"TaskCompleted"}
    assert deltas[-1]["data"]["plan_status"] == "done"


def produce_points(settings: Settings, points: list[dict[str, Any]]) -> None:
    """Send MetricPoints with their `at` as the Kafka timestamp, in order."""
    codec = Codec.from_settings(settings)

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        await producer.start()
        try:
            for p in points:
                await producer.send_and_wait(settings.topic(T.METRICS), key=b"test",
                                             value=codec.encode("MetricPoint", p),
                                             timestamp_ms=p["at"])
        finally:
            await producer.stop()

    asyncio.run(go())


def points(start_ms: int, n: int, step_ms: int, seed: int) -> list[dict[str, Any]]:
    return [{"source": "test", "name": "latency_ms", "value": float((i * 37 + seed) % 101),
             "labels": {"executor": "demo"}, "at": start_ms + i * step_ms} for i in range(n)]


def test_a_restart_with_open_windows_writes_every_window_as_an_uninterrupted_run(
        topics: Settings) -> None:
    settings = topics
    now = int(time.time() * 1000)
    before = points(now - 20_000, 40, 250, seed=1)   # closed windows before the restart
    at_stop = points(now - 2_000, 8, 250, seed=2)    # windows still open when it stops
    produce_points(settings, before + at_stop)
    with observing(settings, idle_ms=5_000) as (first, _):
        until(first.caught_up.is_set, 60, "caught up")
        until(lambda: first.windows.emitted > 0, 30, "first windows written")
        assert first.windows.aggregator.open_windows() > 0
    after = points(int(time.time() * 1000), 8, 250, seed=3)
    produce_points(settings, after)
    with observing(settings, idle_ms=500) as (second, _):
        until(second.caught_up.is_set, 60, "caught up")
        until(lambda: second.windows.aggregator.open_windows() == 0, 30, "every window closed")
        until(lambda: not second._unsent, 10, "windows written")

    agg = Aggregator(SMALL)
    expected: dict[str, dict[str, Any]] = {}
    for p in before + at_stop + after:
        for a in agg.add(Point.from_record(p), p["at"]):
            expected[a.key] = to_avro(a)
    for a in agg.tick(10**15):
        expected[a.key] = to_avro(a)
    written = [v for _, et, v in events(settings, T.METRICS_WINDOWS, idle=1.0)
               if et == "MetricAggregate"]
    latest = {v["key"]: v for v in written}
    assert latest == expected  # every window, each exactly as one uninterrupted run
    assert all(v == expected[v["key"]] for v in written)  # no record ever differed
    assert len(written) > len(latest)  # the restart did re-emit windows it had written


def quick_plan(name: str) -> dict[str, Any]:
    plan = yaml.safe_load((ROOT / "examples" / "calc-plan.yaml").read_text())
    plan["name"] = name
    plan.setdefault("options", {})["integration"] = "off"
    for f in plan["files"]:  # unique contents: the cache does not answer for the executor
        f["content"] = f"# {name}\n" + (f.get("content") or "")
    return plan


def done_summary(base: str, plan_id: str) -> dict[str, Any] | None:
    status, body = get(f"{base}/api/plans/{plan_id}")
    summary = json.loads(body) if status == 200 else {}
    return summary if summary.get("status") == "done" else None


def test_a_restart_restores_the_snapshot_and_reads_on_from_its_offsets(
        topics: Settings) -> None:
    settings = topics
    first, second = plan_record(quick_plan("before")), plan_record(quick_plan("after"))
    with running_pipeline(settings, workers=2):
        with observing(settings) as (service, base):
            assert service.restored is None  # nothing written yet: folded from the beginning
            asyncio.run(produce(settings, T.PLANS, "PlanSubmitted", first,
                                key=str(first["plan_id"])))
            before = until(lambda: done_summary(base, str(first["plan_id"])), 120,
                           "first plan done")
        # Stopped cleanly: the snapshot holds the first plan. The second runs meanwhile.
        asyncio.run(produce(settings, T.PLANS, "PlanSubmitted", second,
                            key=str(second["plan_id"])))
        wait_for(settings, str(second["plan_id"]), {"PlanCompleted"}, timeout=120)
        with observing(settings) as (service, base):
            until(lambda: service.caught_up.is_set(), 60, "caught up")
            restored = service.restored
            again = json.loads(get(f"{base}/api/plans/{first['plan_id']}")[1])
            status, body = get(f"{base}/api/plans/{second['plan_id']}")
        fresh = settings.model_copy(update={"observe_snapshot_s": 0.0})
        with observing(fresh) as (service, base):
            until(lambda: service.caught_up.is_set(), 60, "caught up without a snapshot")
            assert service.restored is None
            folded = {pid: json.loads(get(f"{base}/api/plans/{pid}")[1])
                      for pid in (first["plan_id"], second["plan_id"])}
    assert restored is not None and first["plan_id"] in restored.plans
    assert second["plan_id"] not in restored.plans  # read after the snapshot's offsets
    assert sum(restored.offsets[T.EVENTS].values()) > 0
    assert before["status"] == "done" and again == before
    assert status == 200 and json.loads(body)["status"] == "done"
    assert folded == {first["plan_id"]: again, second["plan_id"]: json.loads(body)}
