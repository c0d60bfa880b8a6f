"""Balance a test suite over parallel test workers (pure, no I/O).

LPT greedy: tests sorted longest first (ties by test id), each onto the shard with the least
expected load so far (ties: fewer tests, then lower index — so zero-length tests still fill
every shard). With `m` shards, LPT's makespan is at most (4/3 - 1/(3m)) times the optimum,
and at most 2m/(m+1) times max(total/m, longest).
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Expected duration of a test when no duration at all is recorded.
DEFAULT_DURATION_S = 1.0


@dataclass(frozen=True)
class Shard:
    """Tests one worker runs together, in the order they were given."""

    index: int
    tests: tuple[str, ...]
    expected_s: float


def expected_durations(tests: Sequence[str], durations: Mapping[str, float]) -> dict[str, float]:
    """Each test's expected seconds: its recorded duration, or the median of the known ones.

    The median is taken over the recorded tests being sharded, else over every recorded
    duration (a suite of all-new tests still resembles the old one), else it is 1.0 s.
    A negative or non-finite record counts as unknown.
    """
    known = {t: durations[t] for t in tests if _usable(durations.get(t))}
    pool = list(known.values()) or [d for d in durations.values() if _usable(d)]
    fallback = statistics.median(pool) if pool else DEFAULT_DURATION_S
    return {t: known.get(t, fallback) for t in tests}


def plan_shards(tests: Sequence[str], durations: Mapping[str, float], workers: int) -> list[Shard]:
    """Split `tests` into min(workers, len(tests)) non-empty shards balanced by duration."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    unique = list(dict.fromkeys(tests))  # a test listed twice still runs once
    if not unique:
        return []
    expected = expected_durations(unique, durations)
    count = min(workers, len(unique))
    # Heap of (load, tests so far, index): least loaded first, then the emptier shard.
    heap = [(0.0, 0, i) for i in range(count)]
    assigned: dict[str, int] = {}
    for test in sorted(unique, key=lambda t: (-expected[t], t)):
        load, size, index = heapq.heappop(heap)
        assigned[test] = index
        heapq.heappush(heap, (load + expected[test], size + 1, index))
    return _shards(unique, assigned, expected, count)


def round_robin_shards(tests: Sequence[str], durations: Mapping[str, float],
                       workers: int) -> list[Shard]:
    """Deal tests out in turn, ignoring durations: the baseline `plan_shards` must beat."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    unique = list(dict.fromkeys(tests))
    expected = expected_durations(unique, durations)
    count = min(workers, len(unique))
    assigned = {test: i % count for i, test in enumerate(unique)}
    return _shards(unique, assigned, expected, count)


def makespan(shards: Iterable[Shard]) -> float:
    """The expected wall time of running `shards` in parallel: the heaviest one."""
    return max((s.expected_s for s in shards), default=0.0)


def ideal_makespan(durations: Iterable[float], workers: int) -> float:
    """A lower bound for any sharding: max(total / workers, longest test)."""
    values = list(durations)
    return max(sum(values) / workers, max(values, default=0.0))


def _shards(ordered: list[str], assigned: Mapping[str, int], expected: Mapping[str, float],
            count: int) -> list[Shard]:
    members: list[list[str]] = [[] for _ in range(count)]
    for test in ordered:
        members[assigned[test]].append(test)
    return [Shard(index=i, tests=tuple(m), expected_s=math.fsum(expected[t] for t in m))
            for i, m in enumerate(members)]


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0
