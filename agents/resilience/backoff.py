"""Exponential backoff with jitter, retry-topic tiers, and the retry-or-dead-letter decision.

Attempts are numbered from 1 like `WorkItem.attempt`: attempt 1 is the first try, and the
delay after a failed attempt `n` is `delay(n)`, so `delay(1)` is the wait before the first
retry. `max_attempts` counts every try, the first included.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from devline.errors import ConfigError

Jitter = Literal["full", "equal", "none"]
JITTERS: tuple[Jitter, ...] = ("full", "equal", "none")

# Used only when the caller passes no generator; seeded callers stay deterministic.
_default_rng = random.Random()  # jitter spreads load; it is not a secret

_MAX_REASON = 500  # reasons travel in Kafka headers; keep them bounded


@dataclass(frozen=True)
class RetryDecision:
    """What to do after attempt `attempt` failed: retry after `delay`, or dead-letter."""

    retry: bool
    attempt: int
    reason: str
    delay: float = 0.0
    tier: float | None = None

    @property
    def dead_letter(self) -> bool:
        """Return True when the task must go to the dead-letter topic."""
        return not self.retry

    @property
    def next_attempt(self) -> int:
        """Return the number the next attempt carries (only meaningful when retrying)."""
        return self.attempt + 1

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (for events and DLQ headers)."""
        return {
            "retry": self.retry,
            "attempt": self.attempt,
            "reason": self.reason,
            "delay": self.delay,
            "tier": self.tier,
        }


@dataclass(frozen=True)
class BackoffPolicy:
    """Capped exponential backoff: `initial * multiplier**(attempt-1)`, then jitter.

    `full` jitter draws from [0, base), `equal` from [base/2, base), `none` is exactly base;
    spreading retries keeps a fleet that failed together from retrying together.
    """

    initial: float = 1.0
    multiplier: float = 2.0
    max_interval: float = 60.0
    jitter: Jitter = "full"
    max_attempts: int = 3
    # A hostile or broken Retry-After must not park a task for days.
    max_retry_after: float = 3600.0

    def __post_init__(self) -> None:
        numbers = {
            "initial": self.initial,
            "multiplier": self.multiplier,
            "max_interval": self.max_interval,
            "max_retry_after": self.max_retry_after,
        }
        for name, value in numbers.items():
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"backoff {name} must be a finite number >= 0, got {value!r}")
        if self.multiplier < 1:
            raise ConfigError(f"backoff multiplier must be >= 1, got {self.multiplier!r}")
        if self.max_interval < self.initial:
            raise ConfigError("backoff max_interval must be >= initial")
        if self.jitter not in JITTERS:
            raise ConfigError(f"backoff jitter must be one of {JITTERS}, got {self.jitter!r}")
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts!r}")

    def base(self, attempt: int) -> float:
        """Return the un-jittered delay after failed attempt `attempt`, capped at max_interval."""
        _check_attempt(attempt)
        try:
            raw = self.initial * self.multiplier ** (attempt - 1)
        except OverflowError:
            return self.max_interval
        return min(raw, self.max_interval)

    def bounds(self, attempt: int) -> tuple[float, float]:
        """Return the (low, high) range the jittered delay falls in, before any Retry-After."""
        base = self.base(attempt)
        if self.jitter == "full":
            return 0.0, base
        if self.jitter == "equal":
            return base / 2, base
        return base, base

    def expected(self, attempt: int) -> float:
        """Return the mean delay after failed attempt `attempt`, before any Retry-After."""
        low, high = self.bounds(attempt)
        return (low + high) / 2

    def delay(
        self,
        attempt: int,
        rng: random.Random | None = None,
        retry_after: float | None = None,
    ) -> float:
        """Return seconds to wait after failed attempt `attempt`.

        Draws exactly one number from `rng` unless jitter is `none`, so a seeded generator
        gives the same schedule every time. A server's `retry_after` is a floor: waiting
        less would only earn another 429.
        """
        low, high = self.bounds(attempt)
        if high > low:
            draw = (rng or _default_rng).random()
            value = low + (high - low) * draw
        else:
            value = low
        floor = _clean_retry_after(retry_after, self.max_retry_after)
        return max(value, floor)

    def schedule(self, rng: random.Random | None = None) -> list[float]:
        """Return the delays before each retry the policy allows (max_attempts - 1 of them)."""
        return [self.delay(n, rng) for n in range(1, self.max_attempts)]

    def decide(
        self,
        attempt: int,
        retryable: bool,
        error: BaseException | str | None = None,
        *,
        rng: random.Random | None = None,
        retry_after: float | None = None,
        tiers: Sequence[float] | None = None,
    ) -> RetryDecision:
        """Return whether to retry after failed attempt `attempt`, and when.

        `retry_after` defaults to the error's own `retry_after` attribute (ExecutorError
        carries the one from an HTTP 429). With `tiers`, the decision also names the
        retry-topic tier the delay rounds up to.
        """
        _check_attempt(attempt)
        what = _describe(error)
        if not retryable:
            return RetryDecision(False, attempt, _reason("not retryable", what))
        if attempt >= self.max_attempts:
            return RetryDecision(
                False, attempt,
                _reason(f"attempts exhausted ({attempt}/{self.max_attempts})", what),
            )
        if retry_after is None:
            retry_after = getattr(error, "retry_after", None)
        wait = self.delay(attempt, rng, retry_after)
        tier = tier_for(wait, tiers) if tiers is not None else None
        head = f"retry {attempt + 1}/{self.max_attempts} in {wait:.3f}s"
        return RetryDecision(True, attempt, _reason(head, what), wait, tier)


def tier_for(delay: float, tiers: Sequence[float]) -> float:
    """Return the smallest tier >= `delay`, or the largest tier when none is long enough.

    Each tier is a retry topic whose consumer waits that long, so rounding up never retries
    early; a delay beyond the last tier is capped to it.
    """
    if not tiers:
        raise ConfigError("retry tiers must not be empty")
    ordered = sorted(tiers)
    if ordered[0] < 0 or not all(math.isfinite(t) for t in ordered):
        raise ConfigError(f"retry tiers must be finite and >= 0, got {list(tiers)!r}")
    for tier in ordered:
        if tier >= delay:
            return tier
    return ordered[-1]


def _check_attempt(attempt: int) -> None:
    if attempt < 1:
        raise ValueError(f"attempts are numbered from 1, got {attempt!r}")


def _clean_retry_after(value: float | None, cap: float) -> float:
    # Retry-After comes from the network: ignore junk rather than fail the retry path.
    if value is None or math.isnan(value) or value <= 0:
        return 0.0
    return min(float(value), cap)


def _describe(error: BaseException | str | None) -> str:
    if error is None:
        return ""
    if isinstance(error, BaseException):
        text = str(error)
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return error


def _reason(head: str, what: str) -> str:
    text = f"{head}: {what}" if what else head
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
