"""Canary rollouts end to end on the real broker, steered by the CLI as a person would.

The stage runs in-process (as in tests/test_rollout_e2e.py) with the simulated deploy
target and metric source; plans roll out over 10, 25, 50, 75, 100 % with 2 s bakes and one
analysis round per step. Covered: a healthy revision passes every step's analysis and is
done at 100 %; a revision whose errors start at 25 % (`error_from_weight`) passes 10 % and
is rolled back at 25 % with the evidence escalated; no traffic pauses the rollout at its
first step; `devline rollout promote --full | abort | retry | status --json` run as
subprocesses and take effect; a stage killed mid-bake is replaced by one that resumes the
same run at the same step with the same bake deadline, and finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from samples import sample_event

from agents.rollout import Measurement, Outcome, assess, spec_of
from agents.rollout.targets import Behaviour, Deployment, SimulatedTarget, behaviours
from devline.errors import ConfigError
from devline.settings import Settings
from devline.supervisor import child_env
from schemas.codec import Codec
from streams import topics as T
from streams.client import produce, records
from streams.rollout.config import RolloutConfig
from streams.rollout.log import fold_plan
from streams.rollout.stage import RolloutStage

ROOT = Path(__file__).resolve().parents[1]
STEPS = [10, 25, 50, 75, 100]
# error_rate is measured once per step (bake 2 s, interval 1 s) over the canary's share
# of ~200 rps: >= 15 canary requests even at 10 %, so min_samples 5 is always met.
CONFIG = {"targets": {"sim": {"type": "simulated", "seed": 7}},
          "metrics": {"error_rate": {"failure": "result > 0.2", "min_samples": 5}}}
BASE = {"rollout.steps": ",".join(map(str, STEPS)), "rollout.bake_s": "2",
        "rollout.interval_s": "1", "rollout.deadline_s": "30", "rollout.revision": "r2",
        "rollout.stable_revision": "r1", "rollout.sim.rps": "200"}
Log = list[tuple[str, dict[str, Any]]]


# -- the simulated target's error_from_weight -------------------------------------------


def test_error_from_weight_is_read_and_checked() -> None:
    found, rps = behaviours({"rollout.sim.r2.error_rate": "0.5",
                             "rollout.sim.r2.error_from_weight": "25", "rollout.sim.rps": "0"})
    b = found["r2"]
    assert (b.error_rate, b.error_from_weight, rps) == (0.5, 25.0, 0.0)
    assert [b.errors_at(w) for w in (0, 10, 24, 25, 50, 100)] == [0, 0, 0, 0.5, 0.5, 0.5]
    # Absent: the error rate applies at every weight (the behaviour before the option).
    always = behaviours({"rollout.sim.r2.error_rate": "0.3"})[0]["r2"]
    assert [always.errors_at(w) for w in (1, 10, 100)] == [0.3, 0.3, 0.3]
    assert Behaviour().errors_at(100) == 0.0
    for bad in ("-1", "101", "x"):
        with pytest.raises(ConfigError, match="error_from_weight"):
            behaviours({"rollout.sim.r2.error_from_weight": bad})


def test_simulated_service_fails_the_canary_only_from_the_given_weight() -> None:
    import aiohttp

    async def go() -> None:
        target = SimulatedTarget("sim", seed=3)
        options = {"rollout.sim.r2.error_rate": "1", "rollout.sim.r2.error_from_weight": "25",
                   "rollout.sim.rps": "0"}
        try:
            seen: dict[int, dict[str, tuple[int, int]]] = {}
            for weight in (10, 25):
                await target.set_weight(Deployment("p", "r2", weight, "r1", options))
                svc = target.services["p"]
                async with aiohttp.ClientSession() as session:
                    for _ in range(200):
                        async with session.get(svc.url) as resp:
                            await resp.read()
                seen[weight] = {r: (c.requests, c.errors) for r, c in svc.window().items()}
        finally:
            await target.close()
        canary10, canary25 = seen[10]["r2"], seen[25]["r2"]
        assert canary10[0] > 0 and canary10[1] == 0  # below 25 %: healthy
        assert canary25[0] > 0 and canary25[1] == canary25[0]  # from 25 % on: error_rate 1
        assert seen[10]["r1"][1] == 0 and seen[25]["r1"][1] == 0  # stable never fails

    asyncio.run(go())


# -- helpers ------------------------------------------------------------------------------


@asynccontextmanager
async def stage_running(settings: Settings, config: RolloutConfig | None = None
                        ) -> AsyncIterator[tuple[RolloutStage, asyncio.Task[None]]]:
    """A stage on the real broker; stopped cleanly unless the test killed its task."""
    own = config is None
    config = config or RolloutConfig.from_mapping(CONFIG)
    stage = RolloutStage(settings, config)
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    try:
        await asyncio.wait_for(stage.caught_up.wait(), 30)
        yield stage, task
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        if own:
            await config.close()


async def complete_plan(settings: Settings, plan: str, options: dict[str, str]) -> None:
    """A plan that asks for a rollout is accepted and completes: the stage starts it."""
    accepted = sample_event("PlanAccepted")
    accepted.update(plan_id=plan, options={**BASE, **options})
    completed = sample_event("PlanCompleted")
    completed.update(plan_id=plan, failed=0)
    await produce(settings, T.EVENTS, "PlanAccepted", accepted, key=plan)
    await produce(settings, T.EVENTS, "PlanCompleted", completed, key=plan)


async def wait_state(stage: RolloutStage, plan: str, check: Callable[[dict[str, Any]], bool],
                     within: float = 30.0) -> dict[str, Any]:
    """Poll the stage's folded state of `plan` until `check` holds; return a copy."""
    deadline = time.monotonic() + within
    while True:
        state = stage.states.get(plan)
        if state is not None and check(state):
            return json.loads(json.dumps(state))
        if time.monotonic() > deadline:
            raise AssertionError(f"{plan}: timed out; state:\n"
                                 + json.dumps(state, indent=1, default=str)[:4000])
        await asyncio.sleep(0.05)


async def log_of(settings: Settings, plan: str, topic: str = T.ROLLOUTS) -> Log:
    """The plan's records on `topic`, in order."""
    codec = Codec.from_settings(settings)
    found = []
    async for r in records(settings, topic, idle_timeout=0.5):
        if r.key == plan.encode():
            found.append((r.offset, *codec.decode(r.value or b"")))
    return [(et, v) for _, et, v in sorted(found, key=lambda x: x[0])]


async def settled(settings: Settings, plan: str, kind: str, within: float = 15.0
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fold the plan from the log until an audit record of action `kind` is in it."""
    deadline = time.monotonic() + within
    while True:
        state, audit, _ = await fold_plan(settings, plan, idle_timeout=0.3)
        if any(a["kind"] == kind for a in audit):
            return state, audit
        if time.monotonic() > deadline:
            raise AssertionError(f"{plan}: no {kind} action in {[a['kind'] for a in audit]}")
        await asyncio.sleep(0.2)


def done(audit: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The data of the actions of `kind` carried out, in order."""
    return [json.loads(a["data_json"]) for a in audit if a["kind"] == kind]


def weights(audit: list[dict[str, Any]]) -> list[int]:
    return [int(a["percent"]) for a in done(audit, "set_weight")]


def measured(log: Log) -> dict[int, list[dict[str, Any]]]:
    """The error_rate measurements per step."""
    out: dict[int, list[dict[str, Any]]] = {}
    for et, v in log:
        if et == "RolloutAnalysisMeasured" and v["metric"] == "error_rate":
            out.setdefault(int(v["step"]), []).append(v["measurement"])
    return out


async def cli(settings: Settings, *args: str) -> tuple[str, str]:
    """Run `python -m devline --topic-prefix P ARGS` as a user would; return its output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devline", "--topic-prefix", settings.topic_prefix, *args,
        env=child_env(settings), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (args, err.decode())
    return out.decode(), err.decode()


async def status(settings: Settings, plan: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out, _ = await cli(settings, "rollout", "status", plan, "--json")
    body = json.loads(out)
    return body["state"], body["actions"]


# -- the rollouts ---------------------------------------------------------------------------


def test_healthy_revision_passes_analysis_at_every_step_and_is_done(topics: Settings) -> None:
    async def go() -> None:
        async with stage_running(topics) as (stage, _):
            await complete_plan(topics, "p-ok", {"rollout.sim.r2.error_rate": "0"})
            await wait_state(stage, "p-ok", lambda s: s["phase"] == "succeeded")
        state, audit = await settled(topics, "p-ok", "done")
        assert weights(audit) == STEPS
        assert done(audit, "done") == [{"revision": "r2", "run": "r2#1"}]
        assert state["phase"] == "succeeded" and state["stable_revision"] == "r2"
        # Every step was left because its analysis passed (no promotion, no pause).
        whys = [h["why"] for h in state["history"]]
        assert [w for w in whys if "step passed" in w] == [
            "step passed; next 25%", "step passed; next 50%", "step passed; next 75%",
            "step passed; next 100%", "succeeded: step passed"]
        assert not any(w.startswith(("paused", "rolling back")) for w in whys)
        rule = spec_of(state).rule("error_rate")
        per_step = measured(await log_of(topics, "p-ok"))
        assert sorted(per_step) == [0, 1, 2, 3, 4]
        for step, ms in per_step.items():
            outcomes = {assess(rule, Measurement.from_dict(m)) for m in ms}
            assert outcomes == {Outcome.SUCCESSFUL}, (step, ms)
            assert all(m["samples"] >= 5 and m["value"] == 0 for m in ms)
        assert await log_of(topics, "p-ok", T.ESCALATIONS) == []

    asyncio.run(go())


def test_errors_from_25_percent_roll_back_at_25_with_the_evidence(topics: Settings) -> None:
    async def go() -> None:
        async with stage_running(topics) as (stage, _):
            await complete_plan(topics, "p-bad", {"rollout.sim.r2.error_rate": "0.8",
                                                  "rollout.sim.r2.error_from_weight": "25"})
            await wait_state(stage, "p-bad", lambda s: s["phase"] == "rolled_back")
        state, audit = await settled(topics, "p-bad", "fix_tasks")
        assert weights(audit) == [10, 25]  # passed 10 %, never reached 50 %
        assert len(done(audit, "rollback")) == 1
        assert state["phase"] == "rolled_back" and state["rollback_done"]
        assert state["stable_revision"] == "r1" and state["step"] == 1
        per_step = measured(await log_of(topics, "p-bad"))
        assert all(m["value"] == 0 for m in per_step[0])  # healthy below 25 %
        failure = state["failure"]
        assert "error_rate" in failure["reason"] and "failed" in failure["reason"]
        evidence = failure["evidence"]
        assert evidence["percent"] == 25 and evidence["revision"] == "r2"
        last = evidence["analysis"]["error_rate"]["last"][-1]
        assert last["outcome"] == "failed" and last["value"] > 0.2 and last["samples"] >= 5
        assert last == per_step[1][-1] | {"outcome": "failed", "at": last["at"]}
        # The person (or the fix loop) gets the same evidence on devline.escalations.
        escalations = await log_of(topics, "p-bad", T.ESCALATIONS)
        assert [(et, v["kind"]) for et, v in escalations] == [("Escalation", "rollout_failed")]
        esc = escalations[0][1]
        assert "error_rate" in esc["reason"]
        sent = json.loads(esc["last_output"])
        assert sent["percent"] == 25 and sent["run"] == "r2#1"
        assert sent["analysis"]["error_rate"]["last"][-1]["value"] == last["value"]

    asyncio.run(go())


def test_no_traffic_keeps_the_rollout_paused_at_its_first_step(topics: Settings) -> None:
    async def go() -> None:
        async with stage_running(topics) as (stage, _):
            await complete_plan(topics, "p-quiet", {"rollout.sim.r2.error_rate": "0",
                                                    "rollout.sim.rps": "0"})
            paused = await wait_state(stage, "p-quiet", lambda s: s["phase"] == "paused")
            # It paused 1 s into a 2 s bake; wait past the bake's end: nothing moves.
            await asyncio.sleep(1.5)
            assert stage.states["p-quiet"]["phase"] == "paused"
        state, audit = await settled(topics, "p-quiet", "escalate")
        assert state["phase"] == "paused" and state["step"] == 0 and state["timers"] == {}
        assert state["history"] == paused["history"]
        assert weights(audit) == [10] and not done(audit, "done")
        assert state["pause"]["kind"] == "analysis"
        assert "inconclusive" in state["pause"]["reason"]
        assert all(m["value"] is None and m["samples"] == 0
                   for ms in measured(await log_of(topics, "p-quiet")).values() for m in ms)
        escalations = await log_of(topics, "p-quiet", T.ESCALATIONS)
        assert [v["kind"] for _, v in escalations] == ["rollout"]
        assert "inconclusive" in escalations[0][1]["reason"]

    asyncio.run(go())


def test_promote_full_abort_and_retry_from_the_cli(topics: Settings) -> None:
    baking = {"rollout.sim.r2.error_rate": "0", "rollout.bake_s": "120"}

    async def go() -> None:
        async with stage_running(topics) as (stage, _):
            await complete_plan(topics, "p-full", baking)
            await complete_plan(topics, "p-stop", baking)
            for plan in ("p-full", "p-stop"):
                await wait_state(stage, plan, lambda s: s["phase"] == "baking")
            promoted, aborted = await asyncio.gather(
                cli(topics, "rollout", "promote", "--full", "p-full"),
                cli(topics, "rollout", "abort", "p-stop", "--reason", "bad dashboard"))
            assert "promote_full sent for p-full" in promoted[0]
            assert "abort sent for p-stop" in aborted[0]
            await wait_state(stage, "p-full", lambda s: s["phase"] == "succeeded")
            await wait_state(stage, "p-stop", lambda s: s["rollback_done"])

            (full, full_audit), (stop, stop_audit) = await asyncio.gather(
                status(topics, "p-full"), status(topics, "p-stop"))
            assert full["phase"] == "succeeded" and full["full"] and full["step"] == 4
            assert weights(full_audit) == [10, 100]
            assert full["last_control"]["action"] == "promote_full"
            assert full["last_control"]["accepted"]
            assert full["history"][-1]["why"].startswith("succeeded: promoted in full")
            assert stop["phase"] == "aborted" and stop["rollback_done"]
            assert stop["failure"]["reason"].endswith("bad dashboard")
            assert [r["rollback"] for r in done(stop_audit, "rollback")] == [1]
            assert weights(stop_audit) == [10]

            await cli(topics, "rollout", "retry", "p-stop")
            await wait_state(stage, "p-stop", lambda s: s["run"] == "r2#2"
                             and s["phase"] == "baking")
            again, again_audit = await status(topics, "p-stop")
        assert again["run"] == "r2#2" and again["attempt"] == 2 and again["step"] == 0
        assert again["phase"] == "baking" and again["failure"] is None
        assert again["last_control"]["action"] == "retry"
        assert [(a["percent"], a["run"]) for a in done(again_audit, "set_weight")] == [
            (10, "r2#1"), (10, "r2#2")]
        assert any(h["why"].startswith("retry by") for h in again["history"])

    asyncio.run(go())


def test_a_stage_killed_mid_bake_resumes_the_same_step_and_deadline(topics: Settings) -> None:
    async def go() -> None:
        # The deploy target outlives the stage (as a real one does): one config for both.
        config = RolloutConfig.from_mapping(CONFIG)
        try:
            async with stage_running(topics, config) as (stage, task):
                await complete_plan(topics, "p-kill", {"rollout.sim.r2.error_rate": "0",
                                                       "rollout.bake_s": "2,4,2,2,2"})
                before = await wait_state(stage, "p-kill", lambda s: s["step"] == 1
                                          and s["phase"] == "baking" and s["round"] >= 1)
                # No clean stop: the task dies where it is, effects in flight with it.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            bake_due = before["timers"]["bake"]
            assert bake_due > int(time.time() * 1000)  # killed mid-bake
            async with stage_running(topics, config) as (stage, _):
                resumed = stage.states["p-kill"]
                assert (resumed["run"], resumed["step"], resumed["phase"]) == (
                    before["run"], 1, "baking")
                assert resumed["timers"]["bake"] == bake_due
                assert stage.timers[("p-kill", "bake")] == bake_due
                await wait_state(stage, "p-kill", lambda s: s["phase"] == "succeeded")
        finally:
            await config.close()
        state, audit = await settled(topics, "p-kill", "done")
        assert weights(audit) == STEPS  # 25 % was not applied again
        assert state["run"] == before["run"] == "r2#1" and state["attempt"] == 1
        log = await log_of(topics, "p-kill")
        bakes = [v for et, v in log if et == "RolloutTimerFired" and v["kind"] == "bake"]
        assert [v["due_at"] for v in bakes].count(bake_due) == 1
        assert len([et for et, _ in log if et == "RolloutStarted"]) == 1

    asyncio.run(go())


def test_a_sigkilled_rollouts_process_is_resumed_mid_bake(topics: Settings,
                                                          tmp_path: Path) -> None:
    """`devline rollouts` SIGKILLed during a bake; a new stage takes the rollout over.

    Its simulated target dies with it, so this rollout bakes without analysis (no metric
    rules in the process's config): what must survive is the log's state and deadlines.
    """
    config_file = tmp_path / "rollout.json"
    config_file.write_text(json.dumps({"targets": {"sim": {"type": "simulated"}}}))

    async def go() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devline", "--topic-prefix", topics.topic_prefix,
            "rollouts", "--config", str(config_file), env=child_env(topics), cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            await complete_plan(topics, "p-sigkill", {"rollout.sim.r2.error_rate": "0",
                                                      "rollout.bake_s": "0,3,0,0,0"})
            deadline = time.monotonic() + 30
            while True:
                before, _, _ = await fold_plan(topics, "p-sigkill", idle_timeout=0.2)
                if before["step"] == 1 and before["phase"] == "baking":
                    break
                assert time.monotonic() < deadline, before
                assert proc.returncode is None, await proc.stderr.read()  # type: ignore[union-attr]
                await asyncio.sleep(0.1)
        finally:
            if proc.returncode is None:
                proc.kill()  # SIGKILL: no clean stop, no flush, no group leave
            await proc.wait()
        assert proc.returncode == -9
        bake_due = before["timers"]["bake"]
        # The new stage is caught up only once its devline.events group has dropped the
        # killed member (aiokafka's start() waits for an assignment): ~10 s, the group's
        # session timeout. The bake ends meanwhile; its timer fires on resume, same due_at.
        async with stage_running(topics, RolloutConfig.from_mapping(
                json.loads(config_file.read_text()))) as (stage, _):
            resumed = stage.states["p-sigkill"]
            assert (resumed["run"], resumed["step"]) == (before["run"], 1)
            assert stage.timers[("p-sigkill", "bake")] == bake_due
            await wait_state(stage, "p-sigkill", lambda s: s["phase"] == "succeeded")
        state, audit = await settled(topics, "p-sigkill", "done")
        assert weights(audit) == STEPS and state["attempt"] == 1
        log = await log_of(topics, "p-sigkill")
        bakes = [v["due_at"] for et, v in log if et == "RolloutTimerFired" and v["kind"] == "bake"]
        assert bakes.count(bake_due) == 1

    asyncio.run(go())
