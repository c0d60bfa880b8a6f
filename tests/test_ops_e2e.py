"""The ops stage on the real broker: a critical-path task waits behind a long one, the
stage (in-process, short tick, low thresholds) decides to raise it, the decision lands on
devline.ops with its evidence, and the dispatcher sends it before a task that the plain
priorities put first."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from agents.ops import RuleConfig
from devline.settings import Settings
from streams import topics as T
from streams.ops import OpsConfig
from streams.ops.stage import OpsStage
from tests.harness import events, running_pipeline, submit, wait_for, wait_for_pool


@contextmanager
def ops_stage(settings: Settings, config: OpsConfig) -> Iterator[OpsStage]:
    stage = OpsStage(settings, config)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failed: list[BaseException] = []

    def go() -> None:
        try:
            loop.run_until_complete(stage.run(stop))
        except BaseException as exc:  # reported by the test
            failed.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    try:
        yield stage
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
    assert not failed, failed


def test_a_stalled_critical_task_is_raised_and_dispatched_first(topics: Settings) -> None:
    settings = topics
    config = OpsConfig(interval_s=0.5, rules=RuleConfig(stall_after_s=1.0))
    with running_pipeline(settings, workers=1), ops_stage(settings, config) as stage:
        wait_for_pool(settings, 1)
        long_plan = submit(settings, {"project": "ops", "name": "long", "files": [
            {"path": "long.py", "cost": 1, "simulate": {"duration_s": 8}}]})
        wait_for(settings, long_plan, {"TaskDispatched"})
        # Plain priorities (bottom levels) would run y (60), x (50), then c (10); c and y
        # are their plans' critical paths, x is not.
        c_plan = submit(settings, {"project": "ops", "name": "c", "files": [
            {"path": "c.py", "cost": 10}]})
        xy_plan = submit(settings, {"project": "ops", "name": "xy", "files": [
            {"path": "x.py", "cost": 50}, {"path": "y.py", "cost": 60}]})
        for plan in (long_plan, c_plan, xy_plan):
            wait_for(settings, plan, {"PlanCompleted"}, timeout=120)
        deadline = time.monotonic() + 10
        while stage.pending and time.monotonic() < deadline:
            time.sleep(0.2)

    decisions = [v for _, et, v in events(settings, T.OPS) if et == "OpsDecision"]
    raised = {v["params"]["target"]: v for v in decisions if v["action"] == "reprioritise"}
    c = raised[f"{c_plan}/c.py"]
    assert c["plan_id"] == c_plan and c["params"]["acted"] == "true"
    assert c["params"]["rule"] == "stalled_critical_path"
    evidence = json.loads(c["params"]["evidence"])  # a JSON list of what the rule read
    assert evidence and evidence[0].startswith(f"plan:{c_plan}/task:c.py@ready:")
    assert float(c["params"]["priority"]) > 50
    assert f"{xy_plan}/x.py" not in raised  # not on a critical path

    dispatched = sorted((v["dispatched_at"], v["task_id"]) for _, et, v in events(settings)
                        if et == "TaskDispatched" and v["plan_id"] in (c_plan, xy_plan))
    order = [task for _, task in dispatched]
    assert order.index("c.py") < order.index("x.py"), order
