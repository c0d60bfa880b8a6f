"""The ops agent's records: what a rule proposes and what the governor decides."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    REPRIORITISE = "reprioritise"
    SCALE = "scale"
    PAUSE_EXECUTOR = "pause_executor"
    RESUME_EXECUTOR = "resume_executor"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Proposal:
    """What one rule wants done, with the evidence (aggregate keys or fact ids) it read."""

    rule: str
    action: Action
    target: str  # "plan/task", plan id, "pool", executor name, deployment id
    params: Mapping[str, str]
    reason: str
    evidence: tuple[str, ...]
    plan_id: str | None = None

    @property
    def decision_id(self) -> str:
        return decision_id(self.rule, self.target, self.evidence)


def decision_id(rule: str, target: str, evidence: tuple[str, ...]) -> str:
    """Return an id that depends only on the rule, the target and the evidence, so a
    replay of the same inputs decides the same ids (and a redelivered one is a no-op)."""
    text = "\n".join([rule, target, *sorted(evidence)])
    return "ops-" + hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Decision:
    """A proposal the governor let through. `acted` is False in dry-run mode: recorded
    for review, not for the scheduler or supervisor to obey."""

    decision_id: str
    rule: str
    action: Action
    target: str
    params: Mapping[str, str]
    reason: str
    evidence: tuple[str, ...]
    at: int  # ms
    acted: bool
    plan_id: str | None = None

    @classmethod
    def of(cls, p: Proposal, at: int, acted: bool, **changes: Any) -> Decision:
        d = cls(p.decision_id, p.rule, p.action, p.target, dict(p.params), p.reason,
                p.evidence, at, acted, p.plan_id)
        return replace(d, **changes) if changes else d

    def to_record(self) -> dict[str, Any]:
        """Return an OpsDecision record (schemas/ops_decision.avsc as it is today): the
        fields the schema lacks (target, rule, evidence, acted) travel in `params`."""
        params = dict(self.params)
        params.update({"target": self.target, "rule": self.rule,
                       # JSON: window keys themselves contain commas and bars.
                       "evidence": json.dumps(list(self.evidence)),
                       "acted": "true" if self.acted else "false", "dry_run":
                       "false" if self.acted else "true"})
        return {"decision_id": self.decision_id, "plan_id": self.plan_id,
                "action": str(self.action), "reason": self.reason, "params": params,
                "at": self.at}
