"""Crash the processor at every effect boundary; the redelivery must give the same files,
artifacts, cache, tables, dead letters and executor runs as a run without a crash.

Runs the real edge (`streams.edge.Processor`: fold, effects, dispatch, recovery) on the
in-memory ports of `streams.edge.fake`, with a simulated worker (`tests.sim`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sim import Sim

FILES = [
    {"path": "a.py", "content": "A = 1\n"},
    {"path": "b.py", "content": "from a import A\nB = A\n"},
    {"path": "c.py", "content": "from a import A\nC = A\n", "simulate": {"fail_first": 1}},
    {"path": "d.py", "content": "from b import B\nfrom c import C\nD = B + C\n"},
    {"path": "e.py", "content": "E = 1\n", "simulate": {"fail_first": 3}},
    {"path": "f.py", "content": "from e import E\nF = E\n"},
]


def plan(plan_id: str) -> dict[str, Any]:
    return {"plan_id": plan_id, "project": "sim", "name": plan_id, "files": FILES}


def dead(task: str) -> Any:
    def check(sim: Sim) -> bool:
        t = dict.get(sim.tables["tasks"], task)
        return bool(t) and t["status"] == "dead"
    return check


async def scenario(sim: Sim) -> Sim:
    """A retry, a dead letter and its redrive, then the same plan again (all cache hits)."""
    sim.submit(plan("p1"))
    await sim.run(dead("p1/e.py"))
    sim.external("TaskRedriveRequested", {
        "event_id": "rr1", "plan_id": "p1", "task_id": "e.py", "attempt": None,
        "dlq_partition": None, "dlq_offset": None, "requested_by": "test",
        "at": sim.ports.now_ms()})
    await sim.run(lambda s: s.reported("p1"))
    sim.submit(plan("p2"))
    await sim.run(lambda s: s.reported("p2"))
    return sim


def run(crash_at: tuple[int, ...] = (), commit_every: int = 3, **how: bool) -> Sim:
    return asyncio.run(scenario(Sim(crash_at, commit_every=commit_every, **how)))


CLEAN = run()
STEPS = CLEAN.crash.steps
FIRST = {"acks": True, "follow": True}  # records folded before the stream brings them
FIRST_STEPS = run(**FIRST).crash.steps


def test_the_clean_run_does_what_the_scenario_says(tmp_path: Path) -> None:
    out = CLEAN.outcome()
    assert out["plans"]["p1"] == {"status": "done", "total": 6, "done": 6, "dead": 0,
                                  "cache_hits": 0, "executor_runs": 6, "reported": True}
    assert out["plans"]["p2"]["cache_hits"] == 6 and out["plans"]["p2"]["executor_runs"] == 0
    assert out["runs"][("p1", "c.py", 2)] == 1 and out["runs"][("p1", "e.py", 4)] == 1
    assert set(out["runs"].values()) == {1}
    assert out["dead_letters"] == 1 and out["escalations"] == 1
    assert out["tasks"]["p1/e.py"]["attempt_base"] == 3
    assert len(out["artifacts"]) == 6
    files = asyncio.run(CLEAN.files(tmp_path))
    assert sorted(files) == [f"sim/{f['path']}" for f in FILES]
    assert STEPS > 100  # every write, send, store and commit is a crash point


@pytest.mark.parametrize("step", range(1, STEPS + 1))
def test_a_crash_at_any_step_changes_nothing(step: int, tmp_path: Path) -> None:
    sim = run((step,))
    assert sim.crash.crashes == 1 and sim.restarts == 1
    assert sim.outcome() == CLEAN.outcome(), CLEAN.crash.trace[step - 1]
    assert asyncio.run(sim.files(tmp_path / "crash")) == asyncio.run(
        CLEAN.files(tmp_path / "clean"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, STEPS + 60), min_size=2, max_size=4, unique=True),
       st.integers(1, 6))
def test_crashes_during_recovery_and_any_commit_interval_change_nothing(
        steps: list[int], commit_every: int) -> None:
    sim = run(tuple(steps), commit_every)
    assert sim.outcome() == CLEAN.outcome()


@pytest.mark.parametrize("how", [{"acks": True}, {"follow": True}, FIRST],
                         ids=["acked-dispatches", "followed-events", "both"])
def test_folding_records_before_the_stream_brings_them_changes_nothing(
        how: dict[str, bool]) -> None:
    sim = Sim(**how)
    folded: list[int] = []
    handle = sim.proc.handle

    async def counted(event_type: str, record: dict[str, Any], seq: int,
                      partition: int = 0) -> None:
        folded.append(seq)
        await handle(event_type, record, seq, partition)

    sim.proc.handle = counted  # type: ignore[method-assign]
    asyncio.run(scenario(sim))
    assert sim.outcome() == CLEAN.outcome()
    ahead = sim.proc.ahead
    assert ahead.count >= 5 and ahead.skipped == ahead.count  # the stream skipped each one
    assert sorted(folded) == list(range(len(sim.log.topics["devline.events"])))  # once each


@pytest.mark.parametrize("step", range(1, FIRST_STEPS + 1))
def test_a_crash_at_any_step_while_folding_first_changes_nothing(step: int) -> None:
    sim = run((step,), **FIRST)
    assert sim.crash.crashes == 1 and sim.restarts == 1
    assert sim.outcome() == CLEAN.outcome()
