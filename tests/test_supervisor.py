"""Supervisor logic without processes or a broker: load readings, pool decisions, drains."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from agents.resilience.clock import FakeClock
from devline.errors import ConfigError
from devline.scaling import (
    STALE_AFTER_S,
    LoadGauge,
    LoadReading,
    PoolPolicy,
    autoscale_config,
    pick_to_drain,
    restart_pause,
)
from devline.settings import Settings
from devline.supervisor import STOP_MARGIN_S, Child, Supervisor


def point(name: str, value: float, source: str = "scheduler") -> dict[str, Any]:
    return {"source": source, "name": name, "value": value, "labels": {}, "at": 0}


# -- load readings -------------------------------------------------------------------------
def test_gauge_needs_both_counts_and_ignores_other_sources() -> None:
    gauge = LoadGauge()
    assert gauge.reading(0.0) is None
    assert gauge.observe("MetricPoint", point("backlog", 40), 0.0)
    assert gauge.reading(0.0) is None  # in-flight still unknown
    assert not gauge.observe("MetricPoint", point("in_flight", 9, source="supervisor"), 0.0)
    assert not gauge.observe("MetricPoint", point("workers", 3), 0.0)
    assert not gauge.observe("TaskCompleted", point("in_flight", 9), 0.0)
    assert gauge.observe("MetricPoint", point("in_flight", 2), 0.5)
    assert gauge.reading(1.0) == LoadReading(backlog=40, in_flight=2)


def test_gauge_keeps_the_latest_value_and_goes_stale() -> None:
    gauge = LoadGauge(stale_after=5.0)
    gauge.observe("MetricPoint", point("backlog", 40), 0.0)
    gauge.observe("MetricPoint", point("in_flight", 2), 0.0)
    gauge.observe("MetricPoint", point("backlog", 7), 3.0)
    assert gauge.reading(5.0) == LoadReading(7, 2)
    assert gauge.reading(5.1) is None  # in_flight last seen at 0.0
    gauge.observe("MetricPoint", point("in_flight", -1), 6.0)  # nonsense clamps to zero
    assert gauge.reading(6.0) == LoadReading(7, 0)


# -- decisions -----------------------------------------------------------------------------
def settings(**kw: Any) -> Settings:
    return Settings(**{"min_workers": 2, "max_workers": 6, "scale_target": 2.0,
                       "scale_down_window": 5.0, **kw})


def test_policy_follows_the_load_and_waits_out_the_window() -> None:
    policy = PoolPolicy(autoscale_config(settings()))
    up = policy.decide(0.0, 2, LoadReading(200, 2))
    assert (up.current, up.desired) == (2, 6) and "scale up" in up.reason
    assert policy.decide(1.0, 6, LoadReading(0, 0)).desired == 6  # a lull is not idle
    assert policy.decide(4.0, 6, LoadReading(0, 0)).desired == 6
    down = policy.decide(6.0, 6, LoadReading(0, 0))
    assert down.desired == 2 and "scale down" in down.reason


def test_policy_holds_without_readings_but_keeps_the_bounds() -> None:
    policy = PoolPolicy(autoscale_config(settings()))
    policy.decide(0.0, 2, LoadReading(200, 0))
    blind = policy.decide(100.0, 6, None)
    assert (blind.desired, blind.reason) == (6, "no scheduler load reading: holding")
    assert policy.decide(100.0, 1, None).desired == 2
    assert policy.decide(100.0, 9, None).desired == 6


def test_settings_feed_the_autoscaler_and_reject_inverted_bounds() -> None:
    cfg = autoscale_config(settings(scale_tolerance=0.2))
    assert (cfg.min_replicas, cfg.max_replicas, cfg.target_per_worker, cfg.tolerance,
            cfg.scale_down_window) == (2, 6, 2.0, 0.2, 5.0)
    with pytest.raises(ConfigError, match="min_workers"):
        Settings.from_env({"DEVLINE_MIN_WORKERS": "7", "DEVLINE_MAX_WORKERS": "6"})
    with pytest.raises(ConfigError, match="DEVLINE_SCALE_TARGET"):
        settings().updated(scale_target=0)
    assert settings().updated(max_workers=None) == settings()
    assert settings().updated(min_workers=3).min_workers == 3


def test_drain_picks_waiting_then_newest_workers() -> None:
    a = Child("worker", 0, started=1.0)
    b = Child("worker", 1, started=5.0)
    c = Child("worker", 2, started=3.0)
    draining = Child("worker", 4, started=9.0, drain_deadline=50.0)
    for child in (a, b, c, draining):
        child.proc = FakeProc()  # type: ignore[assignment]
    crashed = Child("worker", 3, started=0.0)  # proc None: waiting out its restart pause
    pool = [a, b, c, crashed, draining]
    assert pick_to_drain(pool, 2) == [crashed, b]
    assert pick_to_drain(pool, 9) == [crashed, b, c, a]
    assert pick_to_drain(pool, 0) == []


def test_restart_pause_is_none_then_doubles_up_to_thirty_seconds() -> None:
    assert [restart_pause(n) for n in (1, 2, 3, 4, 5, 6, 7, 8, 20)] == [
        0, 1, 2, 4, 8, 16, 30, 30, 30]


# -- the supervisor's bookkeeping, with fake processes --------------------------------------
class FakeProc:
    """A child process that exits when told to, like a worker does on SIGTERM."""

    pids = iter(range(1000, 10**6))

    def __init__(self) -> None:
        self.pid = next(self.pids)
        self.returncode: int | None = None
        self.signals: list[int] = []
        self._exited = asyncio.Event()

    def exit(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)

    def kill(self) -> None:
        self.signals.append(signal.SIGKILL)
        self.exit(-9)

    async def wait(self) -> int:
        await self._exited.wait()
        return -9 if self.returncode is None else self.returncode


class FakeSupervisor(Supervisor):
    """Spawns fake processes; `fake(child)` is the process a child runs now."""

    async def spawn(self, child: Child) -> None:
        child.proc = FakeProc()  # type: ignore[assignment]
        child.started = self.clock()
        child.restart_at = None

    @staticmethod
    def fake(child: Child) -> FakeProc:
        assert isinstance(child.proc, FakeProc)
        return child.proc


def load(sup: Supervisor, backlog: int, in_flight: int) -> None:
    now = sup.clock()
    sup.gauge.observe("MetricPoint", point("backlog", backlog), now)
    sup.gauge.observe("MetricPoint", point("in_flight", in_flight), now)


def pool(sup: Supervisor) -> list[tuple[int, bool]]:
    return [(w.index, w.draining) for w in sup.workers]


def test_burst_starts_workers_then_idle_drains_the_newest_and_never_restarts_them() -> None:
    async def go() -> None:
        clock = FakeClock(100.0)
        sup = FakeSupervisor(settings(worker_grace=10.0), clock=clock.now)
        for _ in range(2):
            await sup.add_worker()
        load(sup, 200, 2)
        decision = await sup.scale()
        assert (decision.current, decision.desired) == (2, 6)
        assert pool(sup) == [(i, False) for i in range(6)]

        clock.advance(3.0)
        load(sup, 0, 0)
        held = await sup.scale()  # the recommendation of 6 is still in the window
        assert (held.current, held.desired) == (6, 6) and "hold" in held.reason
        clock.advance(3.0)
        load(sup, 0, 0)
        decision = await sup.scale()
        assert (decision.current, decision.desired) == (6, 2)
        assert pool(sup) == [(0, False), (1, False), (2, True), (3, True), (4, True), (5, True)]
        drained = [w for w in sup.workers if w.draining]
        assert all(sup.fake(w).signals == [signal.SIGTERM] for w in drained)
        assert drained[0].drain_deadline == clock.now() + 10.0 + STOP_MARGIN_S

        for w in drained:
            sup.fake(w).exit(0)
        sup.reap()
        await sup.restart_due()
        assert pool(sup) == [(0, False), (1, False)]

    asyncio.run(go())


def test_a_crash_is_restarted_after_its_pause_and_a_stuck_drain_is_killed() -> None:
    async def go() -> None:
        clock = FakeClock(0.0)
        sup = FakeSupervisor(settings(worker_grace=5.0), clock=clock.now)
        first, second = await sup.add_worker(), await sup.add_worker()
        clock.advance(3.0)
        sup.fake(first).exit(1)
        sup.reap()
        assert first.proc is None and first.restart_at == 3.0 and first.restarts == 1
        await sup.restart_due()
        assert first.running  # the first crash is restarted at once
        clock.advance(3.0)
        sup.fake(first).exit(1)  # crashing again soon after: a pause
        sup.reap()
        assert first.restart_at == 7.0 and first.restarts == 2
        await sup.restart_due()
        assert first.proc is None
        clock.advance(1.0)
        await sup.restart_due()
        assert first.running

        sup.drain(second)
        clock.advance(5.0 + STOP_MARGIN_S + 0.1)
        sup.reap()
        assert sup.fake(second).signals == [signal.SIGTERM, signal.SIGKILL]
        sup.reap()
        assert sup.workers == [first]

    asyncio.run(go())


def test_without_readings_the_pool_holds_its_size() -> None:
    async def go() -> None:
        clock = FakeClock(0.0)
        sup = FakeSupervisor(settings(), clock=clock.now)
        for _ in range(2):
            await sup.add_worker()
        load(sup, 200, 0)
        await sup.scale()
        clock.advance(STALE_AFTER_S + 60)
        decision = await sup.scale()  # the processor went quiet: no evidence to shrink on
        assert (decision.current, decision.desired) == (6, 6)

    asyncio.run(go())


def test_a_fixed_pool_is_min_equals_max() -> None:
    sup = Supervisor(settings(), 3)
    assert (sup.config.min_replicas, sup.config.max_replicas) == (3, 3)



def scale_decision(replicas: object, at: int, acted: bool = True) -> dict[str, Any]:
    return {"decision_id": "o-9", "plan_id": None, "action": "scale", "reason": "backlog",
            "params": {"replicas": str(replicas), "acted": "true" if acted else "false"},
            "at": at}


def test_an_acted_ops_scale_sets_the_pool_for_its_hold_then_the_autoscaler_resumes() -> None:
    async def go() -> None:
        clock = FakeClock(100.0)
        sup = FakeSupervisor(settings(), clock=clock.now)
        for _ in range(2):
            await sup.add_worker()
        load(sup, 0, 0)
        assert not sup.gauge.observe_ops("OpsDecision", scale_decision(5, 0, acted=False),
                                         clock.now(), 0)  # dry run: recorded only
        assert not sup.gauge.observe_ops("OpsDecision", scale_decision("x", 0), clock.now(), 0)
        # Made 10 s ago (read late): it holds for the 50 s left of its 60.
        assert sup.gauge.observe_ops("OpsDecision", scale_decision(5, 990_000), clock.now(),
                                     1_000_000, hold_s=60.0)
        decision = await sup.scale()
        assert (decision.current, decision.desired) == (2, 5)
        assert "ops decision o-9" in decision.reason and len(sup.active) == 5
        clock.advance(49.0)
        load(sup, 0, 0)
        assert (await sup.scale()).desired == 5  # idle, but the ops target holds
        clock.advance(2.0)
        load(sup, 0, 0)
        assert "ops" not in (await sup.scale()).reason  # the autoscaler has it again
        # A target outside the bounds is clamped to them.
        sup.gauge.observe_ops("OpsDecision", scale_decision(40, 0), clock.now(), 0)
        assert (await sup.scale()).desired == 6

    asyncio.run(go())


def test_shutdown_stops_the_other_children_together_and_kills_the_stuck_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import devline.supervisor as S

    monkeypatch.setattr(S, "OTHERS_GRACE_S", 0.5)

    async def go() -> float:
        sup = FakeSupervisor(settings(worker_grace=0.0))
        others = [Child(role, 0) for role in ("processor", "sink", "tester", "observe")]
        for child in others:
            sup.children.append(child)
            await sup.spawn(child)
        began = time.monotonic()
        await sup.shutdown()  # none of them exits on SIGTERM: every one is killed
        for child in others:
            assert sup.fake(child).signals == [signal.SIGTERM, signal.SIGKILL]
        return time.monotonic() - began

    elapsed = asyncio.run(go())
    assert elapsed < 1.5  # one grace for all four (0.5 s), not four in a row (2 s)
