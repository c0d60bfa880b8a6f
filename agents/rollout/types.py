"""The rollout's vocabulary: phases, input event types, controls, timers and actions.

Kept apart from the machine so the Kafka edge, the CLI and the tests can name them
without importing the fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from devline.errors import DevlineError


class Phase(StrEnum):
    """Where a rollout stands."""

    PENDING = "pending"  # nothing started yet
    PROGRESSING = "progressing"  # a step's weight is being applied (progress deadline runs)
    BAKING = "baking"  # the weight is live: bake time, analysis, then the judge
    PAUSED = "paused"  # waits for a person (manual pause, inconclusive analysis/judge)
    ROLLING_BACK = "rolling_back"  # a failure asked for a rollback, not confirmed yet
    ROLLED_BACK = "rolled_back"  # the deploy target confirmed traffic is back on stable
    ABORTED = "aborted"  # a person aborted; a rollback was requested
    SUCCEEDED = "succeeded"  # 100 % and baked: the revision is the new stable
    SUPERSEDED = "superseded"  # a newer revision replaced this rollout


ACTIVE = frozenset({Phase.PROGRESSING, Phase.BAKING, Phase.PAUSED})


class EventType(StrEnum):
    """The events the machine folds (the event's `event-type` header)."""

    ROLLOUT_STARTED = "RolloutStarted"  # plan, revision, stable_revision?, spec
    DEPLOY_DONE = "DeployDone"  # run, step, weight (0 + rollback n: rollback n is done)
    DEPLOY_FAILED = "DeployFailed"  # run, step, weight (0 + rollback n: it failed), reason
    ANALYSIS_MEASURED = "AnalysisMeasured"  # run, step, round, metric, measurement
    COMPARISON_MEASURED = "ComparisonMeasured"  # run, step, samples
    TIMER_FIRED = "TimerFired"  # run, kind, due_at
    ROLLOUT_CONTROL = "RolloutControl"  # action, by, reason?
    ROLLOUT_SUPERSEDED = "RolloutSuperseded"  # new_revision


class Control(StrEnum):
    """What a person can ask of a rollout (`devline rollout <verb> PLAN`)."""

    PROMOTE = "promote"
    PROMOTE_FULL = "promote_full"
    SKIP_STEP = "skip_step"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    RETRY = "retry"


class TimerKind(StrEnum):
    """The deadlines a rollout keeps, each an absolute `due_at` in ms in the state."""

    DEADLINE = "deadline"  # progress deadline: the weight (or the judge) must answer by then
    BAKE = "bake"  # end of the current step's bake
    ANALYSIS = "analysis"  # next measurement round


class ActionKind(StrEnum):
    """What the fold asks the edge to do. Every action is safe to perform twice."""

    SET_WEIGHT = "set_weight"  # percent, revision, stable_revision, run, step
    MEASURE = "measure"  # metrics, run, step, round, percent
    COMPARE = "compare"  # metrics, run, step: fetch canary/stable samples for the judge
    ARM_TIMER = "arm_timer"  # kind, due_at, run: emit TimerFired at due_at
    ROLLBACK = "rollback"  # reason, evidence, run, revision, stable_revision, rollback n
    ESCALATE = "escalate"  # reason, evidence: a person must decide
    FIX_TASKS = "fix_tasks"  # reason, evidence: the canary's code is at fault
    REJECTED = "rejected"  # control, by, reason: a control that does not apply now
    DONE = "done"  # revision, run: the revision is the new stable


@dataclass(frozen=True)
class Action:
    """One command for the edge: a kind and JSON-able data."""

    kind: ActionKind
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {"kind": self.kind.value, **self.data}


class RolloutEventError(DevlineError):
    """An event the rollout machine cannot read (unknown type, missing field)."""

    dead_letter = True
