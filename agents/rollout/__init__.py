"""Canary rollout as pure logic: spec, Argo-style analysis, Kayenta-style judge, state machine.

No Kafka, no IO, no clock: the machine folds events with their recorded time into a
JSON-able state and returns the actions the edge performs.
"""

from agents.rollout.analysis import (
    AnalysisRun,
    Measurement,
    MetricResult,
    Outcome,
    RunStatus,
    RunVerdict,
    assess,
)
from agents.rollout.judge import (
    Judgement,
    MannWhitney,
    MetricJudgement,
    MetricVerdict,
    Verdict,
    judge,
    mann_whitney_u,
)
from agents.rollout.machine import (
    apply,
    initial_state,
    is_open,
    outstanding,
    pending_timers,
    replay,
)
from agents.rollout.spec import (
    BadDirection,
    Condition,
    JudgeMetric,
    JudgeSpec,
    MetricRule,
    RolloutSpec,
    parse_condition,
    parse_spec,
    spec_from_dict,
)
from agents.rollout.steps import spec_of
from agents.rollout.types import (
    ACTIVE,
    Action,
    ActionKind,
    Control,
    EventType,
    Phase,
    RolloutEventError,
    TimerKind,
)

__all__ = [
    "ACTIVE",
    "Action",
    "ActionKind",
    "AnalysisRun",
    "BadDirection",
    "Condition",
    "Control",
    "EventType",
    "JudgeMetric",
    "JudgeSpec",
    "Judgement",
    "MannWhitney",
    "Measurement",
    "MetricJudgement",
    "MetricResult",
    "MetricRule",
    "MetricVerdict",
    "Outcome",
    "Phase",
    "RolloutEventError",
    "RolloutSpec",
    "RunStatus",
    "RunVerdict",
    "TimerKind",
    "Verdict",
    "apply",
    "assess",
    "initial_state",
    "is_open",
    "judge",
    "mann_whitney_u",
    "outstanding",
    "parse_condition",
    "parse_spec",
    "pending_timers",
    "replay",
    "spec_from_dict",
    "spec_of",
]
