"""Replay, verify and fork planning on real processor logs, without a broker: the logs come
from the real edge on in-memory ports (`tests.sim`), crashes included."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from agents.planning import accept, plan_record
from agents.replay.events import PlanEvent, numbered
from agents.replay.fork import plan_fork
from agents.replay.state import ReplayError, completion_boundary, replay, summary
from agents.replay.verify import verify
from devline.cli.replay import parse_time
from streams import topics as T
from tests.sim import CODEC, Sim
from tests.test_crash_points import CLEAN, STEPS, run


def plan_events(sim: Sim, plan_id: str) -> list[PlanEvent]:
    rows: list[tuple[int, int, int, str | None, dict[str, Any] | None]] = []
    for r in sim.log.topics[T.EVENTS]:
        if r.key == plan_id.encode():
            et, value = CODEC.decode(r.value or b"")
            rows.append((r.partition, r.offset, 1_000 + r.offset, et, value))
    return numbered(rows)


def altered(events: list[PlanEvent], seq: int, **changes: Any) -> list[PlanEvent]:
    out = []
    for e in events:
        if e.seq == seq:
            value = copy.deepcopy(e.value) or {}
            value.update(changes)
            e = PlanEvent(e.seq, e.partition, e.offset, e.timestamp, e.event_type, value)
        out.append(e)
    return out


def first(events: list[PlanEvent], event_type: str, **match: Any) -> PlanEvent:
    return next(e for e in events if e.event_type == event_type
                and all((e.value or {}).get(k) == v for k, v in match.items()))


P1 = plan_events(CLEAN, "p1")  # retries, a dead letter and its redrive
P2 = plan_events(CLEAN, "p2")  # every file a cache hit


def test_numbers_count_only_the_plans_records_from_one() -> None:
    assert [e.seq for e in P1] == list(range(1, len(P1) + 1))
    assert P2[0].seq == 1 and P2[0].offset > P1[-1].offset  # offsets are the partition's
    assert P1[0].event_type == "PlanAccepted" and P1[-1].event_type == "PlanCompleted"


def test_replay_to_a_seq_or_a_time_stops_there() -> None:
    whole = summary(replay(P1))
    assert whole["status"] == "done" and whole["done"] == 6 and whole["executor_runs"] == 6
    assert whole["retries"] == 4 and whole["tasks"] == {"done": 6}
    dead = first(P1, "TaskDeadLettered")
    at_dead = summary(replay(P1, to_seq=dead.seq))
    assert at_dead["status"] == "stalled" and at_dead["dead"] == 1 and at_dead["seq"] == dead.seq
    assert summary(replay(P1, at_ms=dead.timestamp)) == at_dead
    assert summary(replay(P1, to_seq=0))["status"] is None


def test_a_duplicate_on_the_log_changes_no_state() -> None:
    dup_of = first(P1, "TaskRetryScheduled")
    rows = [(e.partition, e.offset * 2, e.timestamp, e.event_type, e.value) for e in P1]
    rows.append((0, dup_of.offset * 2 + 1, dup_of.timestamp, dup_of.event_type, dup_of.value))
    with_dup = numbered(rows)
    assert len(with_dup) == len(P1) + 1
    assert summary(replay(with_dup)) | {"seq": 0, "of": 0} == \
        summary(replay(P1)) | {"seq": 0, "of": 0}
    assert verify(with_dup).agree and verify(with_dup).duplicates == 1


def test_verify_agrees_on_the_processors_own_log() -> None:
    for events in (P1, P2):
        result = verify(events)
        assert result.agree, result.first
    r1 = verify(P1)
    assert r1.checked == {"priorities": 1, "retry": 4, "ready": 4, "dead_letter": 1,
                          "plan_completed": 1}
    assert verify(P2).checked["cache_hit"] == 6


@pytest.mark.parametrize("step", sorted({1 + STEPS * i // 7 for i in range(7)}))
def test_verify_agrees_after_processor_crashes(step: int) -> None:
    sim = run((step, step + 40))
    for plan_id in ("p1", "p2"):
        assert verify(plan_events(sim, plan_id)).agree


@pytest.mark.parametrize(("kind", "match", "changes"), [
    ("TaskRetryScheduled", {"task_id": "c.py"}, {"delay_ms": 1, "due_at": 1}),
    ("TaskDeadLettered", {}, {"reason": "made up"}),
    ("PlanCompleted", {}, {"executor_runs": 5}),
    ("PlanAccepted", {}, None),
    ("TaskReady", {"task_id": "e.py", "attempt": 3}, {"kind": "fix"}),
])
def test_verify_names_the_altered_decision(kind: str, match: dict[str, Any],
                                           changes: dict[str, Any] | None) -> None:
    target = first(P1, kind, **match)
    if changes is None:  # a priority that is not the graph's
        tasks = copy.deepcopy((target.value or {})["tasks"])
        tasks[0]["priority"] += 1
        changes = {"tasks": tasks}
    result = verify(altered(P1, target.seq, **changes))
    assert not result.agree and result.first is not None
    assert result.first.seq == target.seq, result.first


def test_an_altered_failure_shows_at_the_decision_that_answers_it() -> None:
    failed = first(P1, "TaskFailed", task_id="c.py")
    result = verify(altered(P1, failed.seq, retryable=False))
    assert result.first is not None
    decision = first(P1, "TaskRetryScheduled", task_id="c.py")
    assert result.first.seq == decision.seq and result.first.cause_seq == failed.seq
    assert "TaskDeadLettered" in result.first.what


def test_fork_plan_keeps_what_was_done_at_the_boundary() -> None:
    done_d = first(P1, "TaskCompleted", task_id="d.py")
    boundary = completion_boundary(P1, done_d.seq + 1)
    assert boundary == done_d.seq
    fork = plan_fork(P1, done_d.seq + 1, executor="python", new_id="p1f")
    assert sorted(fork.journal["tasks"]) == ["a.py", "b.py", "c.py", "d.py"]
    assert fork.rerun == ["e.py", "f.py"] and fork.boundary == boundary
    files = {f["path"]: f for f in fork.submission["files"]}
    assert files["a.py"]["executor"] == "demo" and files["e.py"]["executor"] == "python"
    options = fork.submission["options"]
    assert options["fork.source"] == "p1" and options["fork.seq"] == str(boundary)
    assert options["fork.hash"] == fork.lineage and len(fork.lineage) == 64
    again = plan_fork(P1, done_d.seq + 1, executor="python", rerun=["b.py"], new_id="x")
    assert "b.py" not in again.journal["tasks"] and "b.py" in again.rerun


def test_fork_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ReplayError, match="numbered 1-"):
        plan_fork(P1, len(P1) + 1)
    with pytest.raises(ReplayError, match="not a file"):
        plan_fork(P1, 5, rerun=["nope.py"])
    # The same id accepted again later with other files (after a rejection, say).
    acc = P1[0].value or {}
    later = dict(acc, tasks=[*acc["tasks"], dict(acc["tasks"][0], task_id="z.py",
                                                   path="z.py")])
    rows = [(e.partition, e.offset, e.timestamp, e.event_type, e.value) for e in P1]
    rows.append((0, P1[-1].offset + 1, 0, "PlanAccepted", later))
    changed = numbered(rows)
    with pytest.raises(ReplayError, match="file list changed"):
        plan_fork(changed, 5)
    assert plan_fork(changed, 5, force=True).submission["files"]


def test_a_fork_runs_only_what_its_journal_does_not_hold() -> None:
    """Through the real edge: the fork's kept files complete from the journal with no
    executor run, the others run; the source's log is untouched."""
    sim = Sim()

    async def go() -> Sim:
        sim.submit({"plan_id": "src", "project": "sim", "name": "src", "files": [
            {"path": "a.py", "content": "A = 1\n"},
            {"path": "b.py", "content": "from a import A\nB = A\n"},
            {"path": "c.py", "content": "from b import B\nC = B\n"},
            {"path": "d.py", "content": "D = 1\n"}]})
        await sim.run(lambda s: s.reported("src"))
        source = plan_events(sim, "src")
        at = first(source, "TaskCompleted", task_id="b.py").seq
        fork = plan_fork(source, at, new_id="fk")
        journal = await sim.store.put(fork.journal_blob())
        doc = {**fork.submission, "options": {**fork.submission["options"],
                                              "fork.journal": journal}}
        sim.external("PlanAccepted", accept(plan_record(doc), accepted_at=sim.ports.now_ms()))
        await sim.run(lambda s: s.reported("fk"))
        return sim

    asyncio.run(go())
    kept = {t for (p, t, _a) in sim.worker.runs if p == "fk"}
    header = sim.plan("fk")
    assert header["status"] == "done" and header["done"] == 4
    assert header["cache_hits"] == 4 - len(kept) and header["executor_runs"] == len(kept)
    assert "a.py" not in kept and "b.py" not in kept  # finished before the fork point
    assert "c.py" in kept  # after it: run again, although the cache has it
    assert verify(plan_events(sim, "fk")).agree
    assert sim.plan("src")["executor_runs"] == 4


def test_times_parse_as_iso_or_milliseconds() -> None:
    assert parse_time("1700000000000") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20") == 1_700_000_000_000
    with pytest.raises(Exception, match="not a time"):
        parse_time("yesterday")


def test_a_fork_reruns_what_was_in_flight_and_drops_rollout_options() -> None:
    dispatched = first(P1, "TaskDispatched", task_id="c.py", attempt=2)
    at = dispatched.seq  # c.py is running (its second attempt) here
    fork = plan_fork(P1, at)
    assert "c.py" in fork.rerun and "c.py" not in fork.journal["tasks"]
    accepted = P1[0].value or {}
    with_rollout = altered(P1, 1, options={**accepted.get("options", {}), "rollout": "on",
                                           "rollout.steps": "50,100", "qa": "off"})
    options = plan_fork(with_rollout, at).submission["options"]
    assert "rollout" not in options and "rollout.steps" not in options
    assert options["qa"] == "off"


def test_a_fork_takes_descriptions_and_contents_from_their_briefs() -> None:
    accepted = copy.deepcopy(P1[0].value or {})
    accepted["tasks"][0].update(description="", content=None, brief="ab" * 32)
    events = altered(P1, 1, tasks=accepted["tasks"])
    with pytest.raises(ReplayError, match="not in the artifact store"):
        plan_fork(events, 5)
    fork = plan_fork(events, 5, briefs={"ab" * 32: ("a long description", "A = 1\n")})
    first_file = fork.submission["files"][0]
    assert first_file["description"] == "a long description"
    assert first_file["content"] == "A = 1\n" and "brief" not in first_file
