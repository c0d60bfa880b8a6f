"""Spending budget: stop starting paid work once a token or cost limit is reached."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from devline.errors import ConfigError

# Costs add up in floats; treat a shortfall below this as having reached the limit.
_COST_EPSILON = 1e-9


@dataclass(frozen=True)
class Remaining:
    """What is left to spend; None where there is no limit."""

    tokens: int | None
    cost: float | None


@dataclass(frozen=True)
class BudgetExhausted:
    """The record that used the budget up, for events and metrics (returned once)."""

    reason: str
    tokens: int
    cost: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return asdict(self)


class Budget:
    """Token and cost spending against optional limits."""

    def __init__(
        self,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        *,
        tokens: int = 0,
        cost: float = 0.0,
    ) -> None:
        if max_tokens is not None and max_tokens < 0:
            raise ConfigError(f"max_tokens must be >= 0, got {max_tokens!r}")
        if max_cost is not None and (not math.isfinite(max_cost) or max_cost < 0):
            raise ConfigError(f"max_cost must be a finite number >= 0, got {max_cost!r}")
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self._tokens = 0
        self._cost = 0.0
        self._add(tokens, cost)

    @property
    def tokens(self) -> int:
        """Return the tokens spent so far."""
        return self._tokens

    @property
    def cost(self) -> float:
        """Return the cost spent so far."""
        return self._cost

    @property
    def exhausted(self) -> bool:
        """Return True once any limit is reached."""
        return self._why() is not None

    @property
    def remaining(self) -> Remaining:
        """Return what is left under each limit (never negative)."""
        tokens = None if self.max_tokens is None else max(0, self.max_tokens - self._tokens)
        cost = None if self.max_cost is None else max(0.0, self.max_cost - self._cost)
        return Remaining(tokens, cost)

    @property
    def fraction_used(self) -> float:
        """Return the largest share of any limit spent (0 with no limits), for dashboards."""
        shares = [0.0]
        if self.max_tokens is not None:
            shares.append(1.0 if self.max_tokens == 0 else self._tokens / self.max_tokens)
        if self.max_cost is not None:
            shares.append(1.0 if self.max_cost == 0 else self._cost / self.max_cost)
        return max(shares)

    def allows(self, tokens: int = 0, cost: float = 0.0) -> bool:
        """Return True when spending this much more keeps every limit unreached or exact."""
        if self.exhausted:
            return False
        if self.max_tokens is not None and self._tokens + tokens > self.max_tokens:
            return False
        return self.max_cost is None or self._cost + cost <= self.max_cost + _COST_EPSILON

    def record(self, tokens: int | None = 0, cost: float | None = 0.0) -> BudgetExhausted | None:
        """Add spending (None counts as 0); return the event if this record exhausts it.

        Spending is recorded even past a limit: the work was done and the money is gone.
        """
        was = self.exhausted
        self._add(tokens or 0, cost or 0.0)
        why = self._why()
        if was or why is None:
            return None
        return BudgetExhausted(why, self._tokens, self._cost)

    def _add(self, tokens: int, cost: float) -> None:
        if tokens < 0 or not math.isfinite(cost) or cost < 0:
            raise ValueError("spending must be finite and >= 0")
        self._tokens += int(tokens)
        self._cost += float(cost)

    def _why(self) -> str | None:
        if self.max_tokens is not None and self._tokens >= self.max_tokens:
            return f"token budget spent: {self._tokens} of {self.max_tokens}"
        if self.max_cost is not None and self._cost >= self.max_cost - _COST_EPSILON:
            return f"cost budget spent: {self._cost:.4f} of {self.max_cost:.4f}"
        return None

    def to_dict(self) -> dict[str, Any]:
        """Return the full state as a JSON-able dict."""
        return {"max_tokens": self.max_tokens, "max_cost": self.max_cost,
                "tokens": self._tokens, "cost": self._cost}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        """Rebuild from `to_dict` output."""
        max_tokens, max_cost = data.get("max_tokens"), data.get("max_cost")
        return cls(None if max_tokens is None else int(max_tokens),
                   None if max_cost is None else float(max_cost),
                   tokens=int(data.get("tokens", 0)), cost=float(data.get("cost", 0.0)))
