"""No-progress detection: identical failures in a row stop the retries."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.resilience.progress import NoProgressDetector, ProgressState
from devline.errors import ConfigError


def run(detector: NoProgressDetector, outcomes: list[str]) -> list[bool]:
    """Feed fingerprints ('ok' is a success); return whether each failure stalled."""
    state: ProgressState | None = None
    stalled = []
    for outcome in outcomes:
        if outcome == "ok":
            state = detector.on_success(state)
            continue
        state, verdict = detector.on_failure(state, outcome)
        stalled.append(verdict.stalled)
    return stalled


def test_same_error_twice_stalls_by_default() -> None:
    detector = NoProgressDetector()
    state, first = detector.on_failure(None, "fp-a")
    assert not first.stalled and first.streak == 1
    state, second = detector.on_failure(state, "fp-a")
    assert second.stalled and second.streak == 2
    assert second.reason.startswith("same failure 2 times in a row (fingerprint fp-a)")


def test_repeats_is_configurable() -> None:
    assert run(NoProgressDetector(3), ["a", "a", "a"]) == [False, False, True]
    assert run(NoProgressDetector(1), ["a"]) == [True]


def test_a_different_fingerprint_starts_over() -> None:
    assert run(NoProgressDetector(2), ["a", "b", "a", "b"]) == [False] * 4
    assert run(NoProgressDetector(2), ["a", "b", "b"]) == [False, False, True]


def test_a_success_starts_over() -> None:
    assert run(NoProgressDetector(2), ["a", "ok", "a", "ok", "a", "a"]) == [
        False, False, False, True]


def test_redelivered_failure_counts_once() -> None:
    detector = NoProgressDetector(2)
    state, _ = detector.on_failure(None, "a", event_id="e1")
    again, verdict = detector.on_failure(state, "a", event_id="e1")
    assert again == state
    assert verdict.duplicate and not verdict.stalled
    state, verdict = detector.on_failure(again, "a", event_id="e2")
    assert verdict.stalled and not verdict.duplicate


def test_seen_ids_survive_a_success_and_stay_bounded() -> None:
    detector = NoProgressDetector(2)
    state, _ = detector.on_failure(None, "a", event_id="e1")
    state = detector.on_success(state)
    state, verdict = detector.on_failure(state, "a", event_id="e1")
    assert verdict.duplicate and verdict.streak == 0
    for i in range(100):
        state, _ = detector.on_failure(state, "b", event_id=f"x{i}")
    assert len(state.seen) == 16


def test_state_round_trips_as_json() -> None:
    detector = NoProgressDetector(3)
    state, _ = detector.on_failure(None, "a", event_id="e1")
    state, _ = detector.on_failure(state, "a", event_id="e2")
    restored = ProgressState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    assert detector.on_failure(restored, "a")[1].stalled
    assert ProgressState.from_dict(None) == ProgressState()


def test_repeats_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        NoProgressDetector(0)


@given(st.integers(1, 5), st.lists(st.sampled_from(["a", "b", "ok"]), max_size=40))
def test_stalls_exactly_when_the_last_k_failures_match(k: int, outcomes: list[str]) -> None:
    detector = NoProgressDetector(k)
    stalled = run(detector, outcomes)
    failures_seen = 0
    for i, outcome in enumerate(outcomes):
        if outcome == "ok":
            continue
        run_length = 0
        for earlier in reversed(outcomes[: i + 1]):
            if earlier != outcome:
                break
            run_length += 1
        assert stalled[failures_seen] == (run_length >= k)
        failures_seen += 1
