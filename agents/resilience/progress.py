"""No-progress detection: the same failure again and again means retrying is pointless.

A task that fails with the same error fingerprint `repeats` times in a row stops retrying
and goes to the PM agent. A success or a different fingerprint starts the count over.
The state per task is a small frozen value a table can store. Fingerprints are opaque
strings here; `agents.executors.fingerprint.error_fingerprint` makes them from an error
with its volatile parts (ids, paths, numbers) removed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from devline.errors import ConfigError

_SEEN = 16  # event ids remembered per task: enough to absorb a redelivered batch


@dataclass(frozen=True)
class ProgressState:
    """One task's run of identical failures."""

    fingerprint: str | None = None
    streak: int = 0
    # Recent failure event ids, so a redelivered event is not counted twice. Ids rather
    # than attempt numbers, because a fix task may number its attempts from 1 again.
    seen: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {"fingerprint": self.fingerprint, "streak": self.streak, "seen": list(self.seen)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ProgressState:
        """Build from `to_dict` output; None gives the empty state."""
        if not data:
            return cls()
        fp = data.get("fingerprint")
        return cls(None if fp is None else str(fp), int(data.get("streak", 0)),
                   tuple(str(e) for e in data.get("seen", ())))


@dataclass(frozen=True)
class ProgressVerdict:
    """Whether a task is stuck, after its latest failure."""

    stalled: bool
    fingerprint: str
    streak: int
    reason: str
    # True when the event was counted before: the caller has already acted on it.
    duplicate: bool = False


class NoProgressDetector:
    """Flags a task whose last `repeats` failures share one fingerprint."""

    def __init__(self, repeats: int = 2) -> None:
        if repeats < 1:
            raise ConfigError(f"no-progress repeats must be >= 1, got {repeats!r}")
        self.repeats = repeats

    def on_failure(
        self, state: ProgressState | None, fp: str, event_id: str | None = None,
    ) -> tuple[ProgressState, ProgressVerdict]:
        """Count one failure with fingerprint `fp`; return the new state and the verdict.

        With `event_id`, an event already counted changes nothing, so the fold stays
        idempotent under at-least-once delivery.
        """
        state = state or ProgressState()
        if event_id is not None and event_id in state.seen:
            return state, replace(self._verdict(state, fp), duplicate=True)
        seen = (*state.seen, event_id)[-_SEEN:] if event_id is not None else state.seen
        streak = state.streak + 1 if fp == state.fingerprint else 1
        new = ProgressState(fp, streak, seen)
        return new, self._verdict(new, fp)

    def on_success(self, state: ProgressState | None = None) -> ProgressState:
        """Return the state after a success: no streak, seen ids kept for dedup."""
        return ProgressState(None, 0, state.seen if state else ())

    def _verdict(self, state: ProgressState, fp: str) -> ProgressVerdict:
        streak = state.streak if state.fingerprint == fp else 0
        if streak >= self.repeats:
            reason = (f"same failure {streak} times in a row (fingerprint {fp}): "
                      "retrying makes no progress, escalate")
            return ProgressVerdict(True, fp, streak, reason)
        return ProgressVerdict(False, fp, streak, f"failure {streak} of {self.repeats} alike")
