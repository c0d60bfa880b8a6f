"""The governor: no flapping under oscillating input, step limits, dedupe, dry run, and
decisions that replay to the same ids."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import fastavro

from agents.metrics import Aggregator, Point
from agents.ops import (
    Action,
    Decision,
    ExecutorFacts,
    Governor,
    GovernorConfig,
    OpsView,
    PoolFacts,
    Proposal,
    executor_errors,
    run_rules,
)
from agents.resilience.clock import FakeClock
from tests.test_ops_rules import MIN, SPECS, T0, calls, load, view_of

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "ops_decision.avsc"


def ms(clock: FakeClock) -> int:
    return int(clock.now() * 1000)


def scale(current: int, wanted: int, window: int) -> Proposal:
    return Proposal("backlog_worker_target", Action.SCALE, "pool",
                    {"replicas": str(wanted), "from": str(current)}, "load",
                    (f"backlog||60000|{window}",))


def test_same_decision_id_is_taken_once() -> None:
    gov = Governor()
    p = scale(2, 3, T0)
    assert len(gov.apply([p], T0)) == 1
    assert gov.apply([p], T0 + 10 * MIN) == []
    assert gov.suppressed[0].why == "already decided"


def test_cooldown_per_action_and_target() -> None:
    gov = Governor()
    assert gov.apply([scale(2, 3, T0)], T0)
    assert gov.apply([scale(3, 4, T0 + MIN)], T0 + 59_999) == []
    assert "cooling down" in gov.suppressed[0].why
    assert gov.apply([scale(3, 4, T0 + 2 * MIN)], T0 + MIN)


def test_worker_target_moves_at_most_two_per_interval() -> None:
    clock, gov, current = FakeClock(T0 / 1000), Governor(), 2
    seen = []
    for i in range(6):
        (d,) = gov.apply([scale(current, 10, T0 + i * MIN)], ms(clock)) or [None]
        if d is not None:
            current = int(d.params["replicas"])
            seen.append(current)
        clock.advance(60)
    assert seen == [4, 6, 8, 10]
    assert Governor().apply([scale(2, 10, T0)], T0)[0].params["wanted"] == "10"


def test_oscillating_load_changes_the_pool_at_most_once_per_cooldown() -> None:
    """Load flips between 20 and 0 every 10 s for an hour: the target moves at most once
    per 60 s and never reverses within the 600 s hysteresis."""
    clock, gov, workers = FakeClock(T0 / 1000), Governor(), 4
    changes: list[tuple[int, int]] = []
    for i in range(360):
        now = ms(clock)
        minute = now - now % MIN - MIN
        high = (i // 1) % 2 == 0
        view = view_of(load(20 if high else 0, 0, minute + 1000),
                       pool=PoolFacts(workers=workers))
        for d in gov.apply(run_rules(view, now), now):
            new = int(d.params["replicas"])
            changes.append((now, new - workers))
            workers = new
        clock.advance(10)
    assert changes
    for (t1, d1), (t2, d2) in itertools.pairwise(changes):
        assert t2 - t1 >= MIN
        if (d1 > 0) != (d2 > 0):
            assert t2 - t1 >= 600_000


def test_flapping_executor_is_paused_once_and_resumed_no_sooner_than_hysteresis() -> None:
    clock, gov = FakeClock(T0 / 1000), Governor()
    paused: int | None = None
    acted: list[tuple[int, Action]] = []
    for m in range(40):
        now = ms(clock)
        bad = m % 2 == 0  # the error rate flips every minute
        start = now - now % MIN - MIN
        view = view_of(calls("http", 0 if bad else 20, 20 if bad else 0, start),
                       executors={"http": ExecutorFacts("http", paused)})
        for d in gov.apply(executor_errors(view, now), now):
            acted.append((now, d.action))
            paused = now if d.action is Action.PAUSE_EXECUTOR else None
        clock.advance(60)
    assert acted[0][1] is Action.PAUSE_EXECUTOR
    for (t1, a1), (t2, a2) in itertools.pairwise(acted):
        assert a1 != a2 and t2 - t1 >= 600_000
    assert len(acted) <= 40 * MIN // 600_000 + 1


def test_dry_run_records_everything_marks_nothing_acted_and_keeps_the_pace() -> None:
    gov = Governor(GovernorConfig(dry_run=True))
    (d,) = gov.apply([scale(2, 3, T0)], T0)
    assert d.acted is False
    record = d.to_record()
    assert record["params"]["dry_run"] == "true" and record["params"]["acted"] == "false"
    assert gov.apply([scale(3, 4, T0 + MIN)], T0 + 30_000) == []  # limits apply in dry run too


def test_same_inputs_same_decision_ids_and_a_restored_governor_continues_alike() -> None:
    inputs = [(T0 + i * 20_000, [scale(4, 4 + (i % 3) * 3 - 2, T0 + (i // 3) * MIN)])
              for i in range(40)]
    a, b = Governor(), Governor()
    run_a = [d for now, ps in inputs for d in a.apply(ps, now)]
    run_b = [d for now, ps in inputs for d in b.apply(ps, now)]
    assert run_a == run_b and run_a

    first = Governor()
    got = [d for now, ps in inputs[:17] for d in first.apply(ps, now)]
    again = Governor.restore(json.loads(json.dumps(first.snapshot())))
    got += [d for now, ps in inputs[17:] for d in again.apply(ps, now)]
    assert got == run_a


def test_decision_record_fits_the_ops_decision_schema() -> None:
    schema = fastavro.parse_schema(json.loads(SCHEMA.read_text()))
    view = view_of(calls("http", 0, 20), executors={})
    decisions: list[Decision] = Governor().apply(run_rules(view, T0 + 10 * MIN), T0 + 10 * MIN)
    assert decisions
    for d in decisions:
        record = d.to_record()
        assert fastavro.validate(record, schema)
        assert record["params"]["evidence"] and record["params"]["target"] == d.target
    assert OpsView().latest("x", MIN, T0) == []


def test_oscillating_load_through_the_real_pipeline_only_scales_up() -> None:
    """Points -> Aggregator -> OpsView -> rules -> Governor with a moving clock: the
    5-minute peak keeps seeing the bursts, so the pool grows in steps and never shrinks."""
    clock, gov, agg, workers = FakeClock(T0 / 1000), Governor(), Aggregator(SPECS), 2
    view = OpsView(pool=PoolFacts(workers=workers))
    targets = []
    for i in range(360):
        now = ms(clock)
        closed = []
        for name, value in (("backlog", 12.0 if i % 2 else 0.0), ("in_flight", 0.0)):
            closed += agg.add(Point("scheduler", name, value, now), now)
        for a in closed + agg.tick(now):
            view.observe(a)
        view.prune(now - 10 * MIN)
        for d in gov.apply(run_rules(view, now), now):
            workers = view.pool.workers = int(d.params["replicas"])
            targets.append(workers)
        clock.advance(10)
    assert targets == [4, 6, 8, 10]
    assert len(view.aggregates) <= 4 * 11  # pruned: two metrics x (1-min + 5-min) x 11 min
