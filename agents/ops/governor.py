"""The governor: what stands between the rules and the actions, so the agent cannot flap.

- A decision id already taken is never taken again (redelivery, a rule re-firing on the
  same evidence); ids are remembered for `remember_s` (1 h), enough to outlive every
  cool-down.
- Cool-down per (action, target): after a decision, the same action on the same target
  waits `cooldown_s[action]` (scale 60 s, everything else 300 s, rollback 600 s).
- Hysteresis in time: undoing a change on a target (resume after pause, scale down after
  up, or the reverse) waits `reverse_cooldown_s` (600 s) after the last change. The rules
  add hysteresis in value (pause above 50% errors, resume at 20%).
- Max change per interval: a worker target moves by at most `max_scale_step` (2) per
  scale cool-down (60 s); the proposal's figure is clamped, not dropped.
- Dry run: every decision is recorded with `acted=False` and counts for the limits, so
  the record shows what the agent would have done, at the pace it would have done it.
State is plain data (`snapshot`/`restore`) for the edge to checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.ops.types import Action, Decision, Proposal

DEFAULT_COOLDOWNS: Mapping[Action, float] = {
    Action.REPRIORITISE: 300.0, Action.SCALE: 60.0, Action.PAUSE_EXECUTOR: 300.0,
    Action.RESUME_EXECUTOR: 300.0, Action.ROLLBACK: 600.0,
}


@dataclass(frozen=True)
class GovernorConfig:
    dry_run: bool = False
    cooldown_s: Mapping[Action, float] = field(default_factory=lambda: dict(DEFAULT_COOLDOWNS))
    reverse_cooldown_s: float = 600.0
    max_scale_step: int = 2
    remember_s: float = 3600.0


@dataclass(frozen=True)
class Suppressed:
    """A proposal the governor held back, and why (for logs and the dashboard)."""

    proposal: Proposal
    why: str


def direction(action: Action, params: Mapping[str, str]) -> tuple[str, int] | None:
    """Return (family, +1/-1) for actions that can be undone, else None (also for a scale
    without its from/to figures, e.g. one recorded by an older version)."""
    match action:
        case Action.PAUSE_EXECUTOR:
            return "executor", 1
        case Action.RESUME_EXECUTOR:
            return "executor", -1
        case Action.SCALE:
            try:
                up = int(params["replicas"]) > int(params["from"])
            except (KeyError, ValueError):
                return None
            return "scale", 1 if up else -1
        case Action.REPRIORITISE | Action.ROLLBACK:
            return None
    raise AssertionError(action)


class Governor:
    """Cool-downs, hysteresis, step limits, dedupe and dry run over rule proposals."""

    def __init__(self, config: GovernorConfig | None = None) -> None:
        self.config = config or GovernorConfig()
        self._seen: dict[str, int] = {}                       # decision id -> at
        self._last: dict[tuple[str, str], int] = {}           # (action, target) -> at
        self._changes: dict[tuple[str, str], tuple[int, int]] = {}  # (family, target) -> dir, at
        self.suppressed: list[Suppressed] = []  # of the latest `apply`

    def apply(self, proposals: Iterable[Proposal], now_ms: int) -> list[Decision]:
        """Return the decisions to publish now; the rest land in `suppressed`."""
        self._forget(now_ms)
        self.suppressed = []
        out = []
        for p in proposals:
            why = self._hold(p, now_ms)
            if why is None and p.action is Action.SCALE:
                p, why = self._clamp(p)
            if why is not None:
                self.suppressed.append(Suppressed(p, why))
                continue
            self._record(p, now_ms)
            out.append(Decision.of(p, now_ms, acted=not self.config.dry_run))
        return out

    def _hold(self, p: Proposal, now_ms: int) -> str | None:
        cfg = self.config
        if p.decision_id in self._seen:
            return "already decided"
        last = self._last.get((str(p.action), p.target))
        cooldown = cfg.cooldown_s.get(Action(p.action), 0.0) * 1000
        if last is not None and now_ms - last < cooldown:
            return f"cooling down: {p.action} on {p.target} {(now_ms - last) / 1000:.0f}s ago"
        way = direction(p.action, p.params)
        if way is not None:
            change = self._changes.get((way[0], p.target))
            if (change is not None and change[0] != way[1]
                    and now_ms - change[1] < cfg.reverse_cooldown_s * 1000):
                return (f"hysteresis: would undo the change on {p.target} "
                        f"{(now_ms - change[1]) / 1000:.0f}s ago")
        return None

    def _clamp(self, p: Proposal) -> tuple[Proposal, str | None]:
        step = self.config.max_scale_step
        current, wanted = int(p.params["from"]), int(p.params["replicas"])
        desired = max(current - step, min(current + step, wanted))
        if desired == current:
            return p, "no change"
        if desired == wanted:
            return p, None
        params = {**p.params, "replicas": str(desired), "wanted": str(wanted)}
        return Proposal(p.rule, p.action, p.target, params,
                        f"{p.reason} (at most {step} per step)", p.evidence, p.plan_id), None

    def _record(self, p: Proposal, now_ms: int) -> None:
        self._seen[p.decision_id] = now_ms
        self._last[(str(p.action), p.target)] = now_ms
        way = direction(p.action, p.params)
        if way is not None:
            self._changes[(way[0], p.target)] = (way[1], now_ms)

    def _forget(self, now_ms: int) -> None:
        # Lifetime: ids for `remember_s`; cool-down marks only while they can still hold.
        keep = now_ms - int(self.config.remember_s * 1000)
        self._seen = {k: at for k, at in self._seen.items() if at >= keep}
        self._last = {k: at for k, at in self._last.items() if at >= keep}
        self._changes = {k: v for k, v in self._changes.items() if v[1] >= keep}

    def snapshot(self) -> dict[str, Any]:
        """Return the state as JSON-able data."""
        return {"seen": dict(sorted(self._seen.items())),
                "last": sorted([a, t, at] for (a, t), at in self._last.items()),
                "changes": sorted([f, t, d, at] for (f, t), (d, at) in self._changes.items())}

    @classmethod
    def restore(cls, data: Mapping[str, Any], config: GovernorConfig | None = None) -> Governor:
        """Rebuild from `snapshot` output."""
        gov = cls(config)
        gov._seen = {str(k): int(v) for k, v in data["seen"].items()}
        gov._last = {(str(a), str(t)): int(at) for a, t, at in data["last"]}
        gov._changes = {(str(f), str(t)): (int(d), int(at)) for f, t, d, at in data["changes"]}
        return gov
