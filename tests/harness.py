"""Run the real pipeline (`devline run`) as a subprocess against the session broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from agents.planning import plan_record
from devline.launch import running
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import produce, records

ROOT = Path(__file__).resolve().parents[1]


def running_pipeline(settings: Settings, workers: int = 2, log: Path | None = None,
                     extra: list[str] | None = None, test_workers: int = 1) -> Any:
    """`devline run --workers N --test-workers T` for the test; stopped with SIGTERM at the
    end. One test worker by default: most plans here have no tests, and every process
    costs start-up time on a 2-core machine."""
    return running(settings, ["--workers", str(workers), "--test-workers", str(test_workers),
                              *(extra or [])], log)


def submit(settings: Settings, plan: dict[str, Any]) -> str:
    record = plan_record(plan)
    asyncio.run(produce(settings, T.PLANS, "PlanSubmitted", record, key=record["plan_id"]))
    return str(record["plan_id"])


Event = tuple[Any, str, dict[str, Any]]


def events(settings: Settings, topic: str = T.EVENTS, idle: float = 1.0) -> list[Event]:
    """Every decodable record of a topic: (raw record, event type, value), in log order."""
    codec = Codec.from_settings(settings)

    async def go() -> list[tuple[Any, str, dict[str, Any]]]:
        out = []
        async for r in records(settings, topic, idle_timeout=idle):
            try:
                et, value = codec.decode(r.value or b"")
            except Exception:  # noqa: S112 - poison records are skipped here
                continue
            out.append((r, et, value))
        return sorted(out, key=lambda x: (x[0].partition, x[0].offset))

    return asyncio.run(go())


def raw_records(settings: Settings, topic: str, idle: float = 1.0) -> list[Any]:
    async def go() -> list[Any]:
        return [r async for r in records(settings, topic, idle_timeout=idle)]

    return asyncio.run(go())


def wait_for(settings: Settings, plan_id: str, kinds: set[str], timeout: float = 90.0
             ) -> tuple[str, dict[str, Any]]:
    """Block until the plan's log holds an event of one of `kinds`; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, et, value in events(settings, idle=0.3):
            if et in kinds and value.get("plan_id") == plan_id:
                return et, value
        time.sleep(0.3)
    raise AssertionError(f"plan {plan_id}: none of {sorted(kinds)} within {timeout}s; "
                         + describe_plan(settings, plan_id))


def describe_plan(settings: Settings, plan_id: str) -> str:
    """The plan as the log folds it: unfinished tasks with status, attempt and worker."""
    from streams.client import replay

    state = asyncio.run(replay(settings, plan_id)).get(plan_id)
    if state is None:
        return "the plan is not in the event log"
    stuck = {t: (v["status"], v["attempt"], v["worker_id"]) for t, v in state.tasks.items()
             if v["status"] != "done"}
    kinds = [et for _, et, v in events(settings) if v.get("plan_id") == plan_id]
    return f"status {state.header['status']}, unfinished {stuck}, events {len(kinds)}"


def plan_events(settings: Settings, plan_id: str) -> list[tuple[Any, str, dict[str, Any]]]:
    return [e for e in events(settings) if e[2].get("plan_id") == plan_id]


def heartbeats(settings: Settings) -> list[dict[str, Any]]:
    """Every heartbeat on devline.workers (workers' and the processor's probes), in order."""
    return [hb for _, et, hb in events(settings, T.WORKERS, idle=0.3) if et == "WorkerHeartbeat"]


def wait_for_pool(settings: Settings, workers: int, timeout: float = 60.0) -> None:
    """Until `workers` live workers report disjoint partitions covering the work topic: the
    group has settled (a rebalance moves items already sent to a partition)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest: dict[str, dict[str, Any]] = {}
        for hb in heartbeats(settings):
            latest[hb["worker_id"]] = hb
        live = [hb for hb in latest.values() if hb["state"] not in ("stopped", "starting")
                and time.time() * 1000 - hb["at"] < 3000]
        owned = [p for hb in live for p in hb["partitions"]]
        if len(live) >= workers and len(owned) == len(set(owned)) == settings.work_partitions:
            return
        time.sleep(0.3)
    raise TimeoutError(f"{workers} workers did not settle within {timeout:g}s")


def wait_for_processor(settings: Settings, since_ms: int, timeout: float = 60.0) -> None:
    """Until a processor started after `since_ms` hears its own probe (it is consuming)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(hb["state"] == "probe" and hb["at"] > since_ms for hb in heartbeats(settings)):
            return
        time.sleep(0.3)
    raise TimeoutError(f"no processor answered within {timeout:g}s")


def until(what: str, check: Any, timeout: float = 90.0) -> Any:
    """Poll `check` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")
