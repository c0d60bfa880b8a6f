"""Random call sequences against the circuit breaker, checked against invariants and an oracle.

The oracle keeps every accepted outcome of the current CLOSED era with its time and
recomputes the window from scratch, so the breaker's bounded window is checked against
the plain definition.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from agents.resilience.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Permit,
    Transition,
)
from agents.resilience.clock import FakeClock

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
LEGAL = {(CLOSED, OPEN), (OPEN, HALF), (HALF, CLOSED), (HALF, OPEN)}

configs = st.builds(
    BreakerConfig,
    failure_rate_threshold=st.sampled_from([0.0, 0.25, 0.5, 0.6]),
    minimum_calls=st.integers(1, 6),
    window=st.sampled_from(["count", "time"]),
    window_size=st.integers(1, 8),
    window_seconds=st.sampled_from([2.0, 5.0, 12.0]),
    bucket_seconds=st.sampled_from([0.5, 1.0, 2.0]),
    open_duration=st.sampled_from([1.0, 5.0, 20.0]),
    half_open_probes=st.integers(1, 4),
    probe_timeout=st.sampled_from([1.0, 7.0, 30.0]),
)
ops = st.lists(
    st.one_of(
        # (call, failed): allow, then report with the permit just issued (if any)
        st.tuples(st.just("call"), st.booleans()),
        st.tuples(st.just("call"), st.booleans()),
        st.tuples(st.just("advance"), st.floats(0.0, 25.0)),
        st.tuples(st.just("allow")),
        st.tuples(st.just("tick")),
        st.tuples(st.just("restart")),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        # (report, failed, which held permit or None, keep it to report it again)
        st.tuples(st.just("report"), st.booleans(), st.none() | st.integers(0, 50),
                  st.booleans()),
    ),
    min_size=10,
    max_size=120,
)


def expand(steps: list[Any]) -> list[Any]:
    """Split each `call` into an allow and a report of the permit that allow hands out."""
    out: list[Any] = []
    for step in steps:
        out += [("allow",), ("report", step[1], "last", False)] if step[0] == "call" else [step]
    return out


def pick(held: list[Permit], which: int | str | None, issued: Permit | None) -> Permit | None:
    if which == "last":
        return issued
    if isinstance(which, int) and held:
        return held[which % len(held)]
    return None


@dataclass
class Oracle:
    config: BreakerConfig
    state: BreakerState = CLOSED
    generation: int = 0
    outcomes: list[tuple[float, bool]] = field(default_factory=list)
    open_until: float | None = None
    probes_this_era: int = 0

    def window(self, now: float) -> tuple[int, int]:
        cfg = self.config
        if cfg.window == "count":
            kept = self.outcomes[-cfg.window_size:]
        else:
            slots = math.ceil(round(cfg.window_seconds / cfg.bucket_seconds, 9))
            current = math.floor(now / cfg.bucket_seconds)
            kept = [o for o in self.outcomes
                    if math.floor(o[0] / cfg.bucket_seconds) > current - slots]
        return len(kept), sum(1 for _, failed in kept if failed)

    def apply(self, transitions: list[Transition]) -> None:
        for t in transitions:
            assert (t.from_state, t.to_state) in LEGAL, t
            assert t.from_state is self.state, (t, self.state)
            if t.from_state is OPEN:
                assert self.open_until is not None and t.at >= self.open_until
            threshold = self.config.failure_rate_threshold
            if (t.from_state, t.to_state) == (CLOSED, OPEN):
                assert t.calls >= self.config.minimum_calls
                assert t.error_rate > threshold
            if (t.from_state, t.to_state) == (HALF, OPEN):
                assert t.error_rate > threshold
            if (t.from_state, t.to_state) == (HALF, CLOSED):
                assert t.error_rate <= threshold
            self.state = t.to_state
            self.generation += 1
            self.outcomes = []
            self.probes_this_era = 0
            self.open_until = t.at + self.config.open_duration if t.to_state is OPEN else None


def check_stored_state(breaker: CircuitBreaker, now: float | None) -> CircuitBreaker:
    """Check the stored form; with `now`, also that the call just made left nothing overdue."""
    data = breaker.to_dict()
    text = json.dumps(data, allow_nan=False)  # plain JSON, no NaN or infinity
    clone = CircuitBreaker.from_dict(json.loads(text))
    assert clone.to_dict() == data
    if data["state"] == HALF.value:
        assert len(data["probes"]) <= breaker.config.half_open_probes
        # Nothing overdue survives a call: a hung probe cannot hold the breaker.
        if now is not None:
            assert all(now - at < breaker.config.probe_timeout for _, at in data["probes"])
    else:
        assert data["probes"] == []
    return clone


@settings(max_examples=400, deadline=None)
@given(configs, ops)
def test_random_sequences_keep_the_invariants(config: BreakerConfig, steps: list[Any]) -> None:
    clock = FakeClock(1000.0)
    breaker = CircuitBreaker("exec", config)
    oracle = Oracle(config)
    held: list[Permit] = []

    issued: Permit | None = None
    for step in expand(steps):
        now = clock.now()
        kind = step[0]
        last_issued, issued = issued, None
        if kind == "advance":
            clock.advance(step[1])
            continue
        if kind == "restart":
            breaker = check_stored_state(breaker, None)
            continue
        cooling = oracle.open_until is not None and now < oracle.open_until
        returned: list[Transition] | None = None
        if kind == "allow":
            issued = breaker.allow(now)
            if cooling:
                assert issued is None, "a call got through an open breaker"
            if issued is not None:
                held.append(issued)
        elif kind == "tick":
            returned = breaker.tick(now)
        elif kind == "cancel":
            permit = pick(held, step[1], None)
            if permit is not None:
                held.remove(permit)
                outstanding = breaker.outstanding_probes
                unexpired = {seq for seq, at in breaker.to_dict()["probes"]
                             if now - at < config.probe_timeout}
                live = (permit.probe and permit.generation == oracle.generation
                        and permit.seq in unexpired)
                returned = breaker.cancel(now, permit)
                if live and not returned:
                    assert breaker.outstanding_probes == outstanding - 1
                    oracle.probes_this_era -= 1
        else:
            _, failed, which, keep = step
            permit = pick(held, which, last_issued)
            if which == "last" and permit is None:
                continue  # the call was refused: nothing to report
            if permit is not None and not keep and permit in held:
                held.remove(permit)
            # CLOSED has no timed transitions, so the era cannot change before this counts.
            accepted = oracle.state is CLOSED and (
                permit is None or permit.generation == oracle.generation)
            returned = breaker.record(now, failed, permit)
            if accepted:
                oracle.outcomes.append((now, failed))
                calls, failures = oracle.window(now)
                trips = (calls >= config.minimum_calls
                         and failures / calls > config.failure_rate_threshold)
                assert trips == bool(returned), (oracle.outcomes, returned)
                if returned:
                    event("closed -> open")
                    assert (returned[0].calls, returned[0].error_rate) == (
                        calls, failures / calls)
                else:
                    assert breaker.window_totals(now) == (calls, failures)

        drained = breaker.drain()
        if returned is not None:
            assert drained == returned
        for t in drained:
            event(f"{t.from_state} -> {t.to_state}")
        oracle.apply(drained)
        assert breaker.state is oracle.state
        if cooling:
            assert breaker.state is OPEN, "left OPEN before the cool-down ended"
        if issued is not None:
            assert breaker.state is not OPEN
            assert issued.probe == (breaker.state is HALF)
            assert issued.generation == oracle.generation
            if issued.probe:
                oracle.probes_this_era += 1
                assert oracle.probes_this_era <= config.half_open_probes
        check_stored_state(breaker, now)


@settings(max_examples=200, deadline=None)
@given(configs, ops, st.integers(0, 80))
def test_a_restored_breaker_behaves_like_the_original(
    config: BreakerConfig, steps: list[Any], cut: int,
) -> None:
    clock = FakeClock()
    original = CircuitBreaker("exec", config)
    twin: CircuitBreaker | None = None
    held: list[Permit] = []
    issued: Permit | None = None
    for i, step in enumerate(expand(steps)):
        if i == cut:
            twin = CircuitBreaker.from_dict(json.loads(json.dumps(original.to_dict())))
        machines = [original] if twin is None else [original, twin]
        now = clock.now()
        last_issued, issued = issued, None
        if step[0] == "advance":
            clock.advance(step[1])
        elif step[0] == "allow":
            permits = [m.allow(now) for m in machines]
            assert len(set(permits)) == 1
            issued = permits[0]
            if issued is not None:
                held.append(issued)
        elif step[0] == "tick":
            assert len({tuple(m.tick(now)) for m in machines}) == 1
        elif step[0] == "cancel":
            permit = pick(held, step[1], None)
            if permit is not None:
                assert len({tuple(m.cancel(now, permit)) for m in machines}) == 1
        elif step[0] == "report":
            _, failed, which, _keep = step
            permit = pick(held, which, last_issued)
            if which == "last" and permit is None:
                continue
            assert len({tuple(m.record(now, failed, permit)) for m in machines}) == 1
    if twin is not None:
        assert twin.to_dict() == original.to_dict()
