"""Dispatch guards: per-executor circuit breakers and rate limits, per-plan spending budgets.

The dispatcher asks `admit(task)` before sending work; a refused task stays queued while
work for other executors and plans goes on. Outcomes flow back through `on_result`.
Pure logic, time passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agents.resilience.breaker import BreakerConfig, CircuitBreaker, Permit, Transition
from agents.resilience.ratelimit import AimdConfig, AimdLimiter, LimitChange

Key = tuple[str, str]  # (plan_id, task_id)


@dataclass(frozen=True)
class Budget:
    """A plan's spending limits from its options (`budget.tokens`, `budget.cost`)."""

    tokens: int | None = None
    cost: float | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> Budget:
        tokens = options.get("budget.tokens")
        cost = options.get("budget.cost")
        return cls(int(tokens) if tokens else None, float(cost) if cost else None)

    def exhausted_by(self, tokens: int, cost: float) -> str | None:
        """Why the budget is used up, or None while it is not."""
        if self.tokens is not None and tokens >= self.tokens:
            return f"token budget used up: {tokens} of {self.tokens}"
        if self.cost is not None and cost >= self.cost:
            return f"cost budget used up: {cost:.4f} of {self.cost:.4f}"
        return None


class Guards:
    """Breaker + AIMD limiter per executor; permits held per in-flight task."""

    def __init__(self, breaker: BreakerConfig | None = None, aimd: AimdConfig | None = None
                 ) -> None:
        self.breaker_config = breaker or BreakerConfig()
        self.aimd_config = aimd or AimdConfig(initial_limit=64, max_limit=256)
        self.breakers: dict[str, CircuitBreaker] = {}
        self.limiters: dict[str, AimdLimiter] = {}
        self._held: dict[Key, tuple[str, Permit]] = {}

    def breaker(self, executor: str) -> CircuitBreaker:
        if executor not in self.breakers:
            self.breakers[executor] = CircuitBreaker(executor, self.breaker_config)
        return self.breakers[executor]

    def limiter(self, executor: str) -> AimdLimiter:
        if executor not in self.limiters:
            self.limiters[executor] = AimdLimiter(self.aimd_config)
        return self.limiters[executor]

    def admit(self, key: Key, executor: str, now: float) -> bool:
        """Take a breaker permit and a rate-limit slot for one dispatch, or refuse."""
        if key in self._held:
            return True
        breaker, limiter = self.breaker(executor), self.limiter(executor)
        if limiter.wait_time(now) > 0 or limiter.in_flight >= limiter.limit:
            return False
        permit = breaker.allow(now)
        if permit is None:
            return False
        limiter.acquire(now)
        self._held[key] = (executor, permit)
        return True

    def on_result(self, key: Key, executor: str, *, failed: bool, rate_limited: bool = False,
                  retry_after: float | None = None, now: float
                  ) -> tuple[list[Transition], LimitChange | None]:
        """Report how a dispatched task ended; returns breaker transitions and limit change.

        Transitions that happen inside `admit` (cool-down over: half-open) come out of
        `drain`; callers that publish should drain rather than use the list returned here.
        """
        held = self._held.pop(key, None)
        permit = held[1] if held else None
        breaker, limiter = self.breaker(executor), self.limiter(executor)
        if held:
            limiter.release()
        change = (limiter.on_rate_limited(now, retry_after) if rate_limited
                  else limiter.on_success(now) if not failed else None)
        # A 429 says "slow down", not "broken": it steers the limiter, not the breaker.
        transitions = [] if rate_limited else breaker.record(now, failed, permit)
        return transitions, change

    def forget(self, key: Key, now: float) -> list[Transition]:
        """A dispatch that never ran (worker lost): hand its permit back."""
        held = self._held.pop(key, None)
        if not held:
            return []
        executor, permit = held
        self.limiter(executor).release()
        return self.breaker(executor).cancel(now, permit)

    def tick(self, now: float) -> list[Transition]:
        out: list[Transition] = []
        for breaker in self.breakers.values():
            out += breaker.tick(now)
        return out

    def drain(self) -> list[Transition]:
        """Every transition not yet handed out, from every breaker, oldest first."""
        out = [t for b in self.breakers.values() for t in b.drain()]
        return sorted(out, key=lambda t: t.at)

    def state_of(self, executor: str) -> dict[str, Any]:
        return {"breaker": self.breaker(executor).to_dict(),
                "limiter": self.limiter(executor).to_dict()}

    def restore(self, executor: str, data: Mapping[str, Any]) -> None:
        self.breakers[executor] = CircuitBreaker.from_dict(dict(data["breaker"]),
                                                           self.breaker_config)
        limiter = AimdLimiter.from_dict(dict(data["limiter"]), self.aimd_config)
        limiter.reset_in_flight()  # in-flight permits do not survive a restart
        self.limiters[executor] = limiter
