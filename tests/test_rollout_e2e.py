"""The rollout stage on the real broker: simulated target and source, a clock we can move."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from samples import sample_event

from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import produce, records
from streams.rollout.config import RolloutConfig
from streams.rollout.stage import RolloutStage

CONFIG = {"metrics": {"error_rate": {"failure": "result > 0.2", "min_samples": 3}}}


class MovableClock:
    """Wall time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.offset_ms

    def advance(self, seconds: float) -> None:
        self.offset_ms += int(seconds * 1000)


@asynccontextmanager
async def stage_running(settings: Settings, clock: MovableClock
                        ) -> AsyncIterator[RolloutStage]:
    config = RolloutConfig.from_mapping(CONFIG)
    stage = RolloutStage(settings, config, clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    await asyncio.wait_for(stage.caught_up.wait(), 30)
    try:
        yield stage
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await config.close()


async def complete_plan(settings: Settings, plan: str, options: dict[str, str]) -> None:
    accepted = sample_event("PlanAccepted")
    accepted.update(plan_id=plan, options={"rollout.steps": "50,100", "rollout.bake_s": "2",
                                           "rollout.interval_s": "1",
                                           "rollout.revision": "r2",
                                           "rollout.stable_revision": "r1",
                                           "rollout.sim.rps": "80", **options})
    completed = sample_event("PlanCompleted")
    completed.update(plan_id=plan, failed=0)
    await produce(settings, T.EVENTS, "PlanAccepted", accepted, key=plan)
    await produce(settings, T.EVENTS, "PlanCompleted", completed, key=plan)


async def log_of(settings: Settings, topic: str = T.ROLLOUTS) -> list[tuple[str, dict[str, Any]]]:
    codec = Codec.from_settings(settings)
    out = []
    async for r in records(settings, topic, idle_timeout=0.5):
        out.append((r.offset, *codec.decode(r.value or b"")))
    return [(et, v) for _, et, v in sorted(out, key=lambda x: x[0])]


async def wait_for(settings: Settings, check: Any, within: float = 30.0,
                   topic: str = T.ROLLOUTS) -> list[tuple[str, dict[str, Any]]]:
    deadline = time.monotonic() + within
    while True:
        log = await log_of(settings, topic)
        if check(log):
            return log
        if time.monotonic() > deadline:
            raise AssertionError("timed out; log:\n" + "\n".join(
                f"{et} {json.dumps(v, default=str)[:200]}" for et, v in log))
        await asyncio.sleep(0.3)


def actions(log: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [json.loads(v["data_json"]) for et, v in log
            if et == "RolloutAction" and v["kind"] == kind]


def test_healthy_canary_goes_50_then_100_and_is_done(topics: Settings) -> None:
    async def go() -> None:
        async with stage_running(topics, MovableClock()):
            await complete_plan(topics, "p-healthy", {"rollout.sim.r2.error_rate": "0"})
            log = await wait_for(topics, lambda log: actions(log, "done"))
        assert [a["percent"] for a in actions(log, "set_weight")] == [50, 100]
        assert actions(log, "done")[0]["revision"] == "r2"
        measured = [v for et, v in log if et == "RolloutAnalysisMeasured"]
        assert measured and all(m["measurement"]["samples"] >= 3 for m in measured)
        started = [v for et, v in log if et == "RolloutStarted"]
        assert len(started) == 1  # one start, whatever re-reads happen
        # Each measurement also feeds the ops agent's canary windows.
        points = [v for et, v in await log_of(topics, T.METRICS)
                  if et == "MetricPoint" and v["name"] == "canary.error_rate"]
        assert len(points) == len(measured)
        assert {(p["labels"]["plan_id"], p["labels"]["revision"]) for p in points} == {
            ("p-healthy", "r2")}

    asyncio.run(go())


def test_bad_canary_is_rolled_back_with_an_escalation(topics: Settings) -> None:
    async def go() -> None:
        async with stage_running(topics, MovableClock()):
            await complete_plan(topics, "p-bad", {"rollout.sim.r2.error_rate": "0.5"})
            log = await wait_for(topics, lambda log: any(
                et == "RolloutDeployDone" and v["weight"] == 0 for et, v in log))
            escalations = await wait_for(topics, lambda log: log, topic=T.ESCALATIONS)
        assert [a["percent"] for a in actions(log, "set_weight")] == [50]
        rollback = actions(log, "rollback")
        assert len(rollback) == 1 and "analysis" in rollback[0]["reason"]
        _, esc = escalations[0]
        assert esc["kind"] == "rollout_failed" and esc["plan_id"] == "p-bad"
        evidence = json.loads(esc["last_output"])
        assert evidence["revision"] == "r2" and evidence["analysis"]

    asyncio.run(go())


def test_pause_resume_and_restart_keep_the_deadlines(topics: Settings) -> None:
    from devline.cli.rollout import send_control
    from streams.rollout.log import fold_plan

    async def go() -> None:
        clock = MovableClock()
        opts = {"rollout.sim.r2.error_rate": "0", "rollout.bake_s": "30",
                "rollout.interval_s": "1"}
        async with stage_running(topics, clock):
            await complete_plan(topics, "p-ctl", opts)
            await wait_for(topics, lambda log: any(
                et == "RolloutTimerFired" and v["kind"] == "analysis" for et, v in log))
            state, _, _ = await fold_plan(topics, "p-ctl")
            assert state["phase"] == "baking"
            bake_due = state["timers"]["bake"]
            await send_control(topics, "p-ctl", _control("pause"), by="ann@test")
            await wait_for(topics, lambda log: any(
                et == "RolloutControl" for et, _ in log))
            state, _, _ = await fold_plan(topics, "p-ctl")
            assert state["phase"] == "paused" and state["last_control"]["by"] == "ann@test"
            await send_control(topics, "p-ctl", _control("resume"), by="ann@test")
            await asyncio.sleep(1.0)
            state, _, _ = await fold_plan(topics, "p-ctl")
            assert state["phase"] == "baking"
            bake_due = state["timers"]["bake"]
        # The stage is gone mid-bake; time passes; a new stage resumes with the same deadline.
        clock.advance(31)
        async with stage_running(topics, clock) as stage:
            assert stage.timers[("p-ctl", "bake")] == bake_due
            log = await wait_for(topics, lambda log: any(
                et == "RolloutTimerFired" and v["kind"] == "bake" for et, v in log))
        fired = [v for et, v in log if et == "RolloutTimerFired" and v["kind"] == "bake"]
        assert fired[0]["due_at"] == bake_due
        assert [a["percent"] for a in actions(log, "set_weight")] == [50, 100]

    asyncio.run(go())


def _control(name: str) -> Any:
    from agents.rollout import Control

    return Control(name)


def ops_decision(plan: str, decision_id: str, at: int, acted: bool = True) -> dict[str, Any]:
    return {"decision_id": decision_id, "plan_id": plan, "action": "rollback",
            "reason": "canary p-ops: error_rate p95 0.4 > 0.1",
            "params": {"target": plan, "rule": "canary_breach", "evidence": "w1",
                       "acted": "true" if acted else "false",
                       "dry_run": "false" if acted else "true"}, "at": at}


def test_an_acted_ops_rollback_aborts_the_rollout_and_a_dry_run_does_not(
        topics: Settings) -> None:
    async def go() -> None:
        clock = MovableClock()
        opts = {"rollout.sim.r2.error_rate": "0", "rollout.bake_s": "30"}
        async with stage_running(topics, clock) as stage:
            # One made before the run started (read again after a restart) is stale.
            await produce(topics, T.OPS, "OpsDecision",
                          ops_decision("p-ops", "old", clock() - 60_000), key="p-ops")
            await complete_plan(topics, "p-ops", opts)
            await wait_for(topics, lambda log: any(
                et == "RolloutTimerFired" and v["kind"] == "analysis" for et, v in log))
            await produce(topics, T.OPS, "OpsDecision",
                          ops_decision("p-ops", "dry", clock(), acted=False), key="p-ops")
            await produce(topics, T.OPS, "OpsDecision",
                          ops_decision("p-ops", "d-7", clock()), key="p-ops")
            log = await wait_for(topics, lambda log: any(
                et == "RolloutDeployDone" and v["weight"] == 0 for et, v in log))
            assert stage.states["p-ops"]["phase"] in ("aborted", "rolling_back")
        controls = [v for et, v in log if et == "RolloutControl"]
        assert [(c["action"], c["by"]) for c in controls] == [("abort", "ops")]
        assert "ops decision d-7" in controls[0]["reason"]
        assert len(actions(log, "rollback")) == 1

    asyncio.run(go())


def test_a_poison_rollout_record_is_dead_lettered_once_and_the_stage_goes_on(
        topics: Settings) -> None:
    from aiokafka import AIOKafkaProducer

    async def poison() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=topics.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topics.topic(T.ROLLOUTS), b"\x00garbage",
                                         key=b"p-poison")
        finally:
            await producer.stop()

    async def letters() -> list[Any]:
        return [r async for r in records(topics, T.DLQ, idle_timeout=0.5)
                if dict(r.headers).get("dlq-source-topic") == topics.topic(T.ROLLOUTS).encode()]

    async def go() -> None:
        await poison()
        async with stage_running(topics, MovableClock()) as stage:
            await complete_plan(topics, "p-after", {"rollout.sim.r2.error_rate": "0"})
            deadline = time.monotonic() + 30
            while "p-after" not in stage.states or stage.states["p-after"]["run"] is None:
                assert time.monotonic() < deadline, "the stage stopped after the poison"
                await asyncio.sleep(0.2)
        async with stage_running(topics, MovableClock()):  # replays the poison: not again
            pass
        found = await letters()
        assert len(found) == 1
        reason = dict(found[0].headers)["dlq-reason"].decode()
        assert "undecodable" in reason and found[0].key == b"p-poison"

    asyncio.run(go())
