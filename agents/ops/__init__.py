"""The ops agent as pure logic: rules read window aggregates and plan facts (`OpsView`)
and propose; the `Governor` turns proposals into `Decision`s with cool-downs, hysteresis,
step limits and dry run. No Kafka and no clock reads: `now_ms` comes in as an argument.
"""

from agents.ops.governor import DEFAULT_COOLDOWNS, Governor, GovernorConfig, Suppressed
from agents.ops.rules import (
    DEFAULT_CONFIG,
    RULES,
    Rule,
    RuleConfig,
    backlog_worker_target,
    canary_breach,
    executor_errors,
    fix_rate_explosion,
    run_rules,
    stalled_critical_path,
)
from agents.ops.types import Action, Decision, Proposal, decision_id
from agents.ops.view import (
    CanaryFacts,
    ExecutorFacts,
    OpsView,
    PlanFacts,
    PoolFacts,
    WaitingTask,
)

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_COOLDOWNS",
    "RULES",
    "Action",
    "CanaryFacts",
    "Decision",
    "ExecutorFacts",
    "Governor",
    "GovernorConfig",
    "OpsView",
    "PlanFacts",
    "PoolFacts",
    "Proposal",
    "Rule",
    "RuleConfig",
    "Suppressed",
    "WaitingTask",
    "backlog_worker_target",
    "canary_breach",
    "decision_id",
    "executor_errors",
    "fix_rate_explosion",
    "run_rules",
    "stalled_critical_path",
]
