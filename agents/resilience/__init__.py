"""Resilience policies as pure logic: backoff, circuit breaker, no-progress, autoscaling,
AIMD rate limiting and budgets. No Kafka and no sleeping: time comes in as `now` arguments
or from a `Clock`, state goes to and from plain dicts for tables, and every transition
comes back as data for the caller to publish.
"""

from agents.resilience.autoscale import AutoscaleConfig, Autoscaler, ScaleDecision
from agents.resilience.backoff import BackoffPolicy, RetryDecision, tier_for
from agents.resilience.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Permit,
    Transition,
)
from agents.resilience.budget import Budget, BudgetExhausted, Remaining
from agents.resilience.clock import Clock, FakeClock, SystemClock
from agents.resilience.progress import NoProgressDetector, ProgressState, ProgressVerdict
from agents.resilience.ratelimit import AimdConfig, AimdLimiter, LimitChange

__all__ = [
    "AimdConfig",
    "AimdLimiter",
    "AutoscaleConfig",
    "Autoscaler",
    "BackoffPolicy",
    "BreakerConfig",
    "BreakerState",
    "Budget",
    "BudgetExhausted",
    "CircuitBreaker",
    "Clock",
    "FakeClock",
    "LimitChange",
    "NoProgressDetector",
    "Permit",
    "ProgressState",
    "ProgressVerdict",
    "Remaining",
    "RetryDecision",
    "ScaleDecision",
    "SystemClock",
    "Transition",
    "tier_for",
]
