"""Discrete-event simulation of W identical workers running a dependency graph.

Edges point from importer to imported (`a -> b`: a depends on b, so b runs first). Each
policy decides two things: when a task is *released* (may start) and, among released tasks,
which one a free worker takes next. The loop is heap-based, O((V + E) log V), and pure.

- `critical_path_first`: released when its last dependency finishes; highest bottom level
  first, ties by name. This is what the pipeline does.
- `level_batches`: a whole topological level is released only when every task of the level
  before it is done; longest task first within a level, ties by name.
- `fifo_topological`: released when its last dependency finishes; in release order, ties by
  position in a lexicographic topological order.

`lower_bound` is max(critical path, total work / W); `interval_lower_bound` is never lower
and much closer to the optimum when those two are about equal.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import networkx as nx

from agents.scheduling.priority import bottom_levels, topological_levels
from devline.errors import ConfigError, PlanError

CRITICAL_PATH_FIRST = "critical_path_first"
LEVEL_BATCHES = "level_batches"
FIFO_TOPOLOGICAL = "fifo_topological"
POLICIES: tuple[str, ...] = (CRITICAL_PATH_FIRST, LEVEL_BATCHES, FIFO_TOPOLOGICAL)

# A task's duration when `costs` does not name it; the same default `bottom_levels` uses.
DEFAULT_COST = 1.0


@dataclass(frozen=True)
class Schedule:
    """When each task ran and on which worker; `makespan` is the last finish time."""

    policy: str
    workers: int
    makespan: float
    start: dict[str, float]
    finish: dict[str, float]
    worker: dict[str, int]


def durations(graph: nx.DiGraph, costs: Mapping[str, float]) -> dict[str, float]:
    """Each task's duration; raise `PlanError` for a negative or non-finite one."""
    out: dict[str, float] = {}
    for node in graph:
        value = float(costs.get(node, DEFAULT_COST))
        if not math.isfinite(value) or value < 0:
            raise PlanError(f"task {node!r} has duration {value!r}; need a finite value >= 0",
                            field="cost")
        out[node] = value
    return out


def lower_bound(graph: nx.DiGraph, costs: Mapping[str, float], workers: int) -> float:
    """No schedule on `workers` workers beats max(critical path cost, total work / workers)."""
    _check_workers(workers)
    if graph.number_of_nodes() == 0:
        return 0.0
    duration = durations(graph, costs)
    _check_acyclic(graph)
    longest = max(bottom_levels(graph, duration).values())
    return max(longest, math.fsum(duration.values()) / workers)


def interval_lower_bound(graph: nx.DiGraph, costs: Mapping[str, float], workers: int) -> float:
    """A tighter bound: for every time t, t + (work that cannot be done before t) / workers.

    A task cannot start before its earliest start (longest chain of dependencies before
    it), so at least `min(cost, earliest start + cost - t)` of it runs after t, and the
    workers have only `workers * (makespan - t)` of room after t. The same holds with time
    reversed (tasks need their dependents' chain after them). Taking t = 0 and t = the
    critical path gives back `lower_bound`, so this one is never lower.
    """
    _check_workers(workers)
    if graph.number_of_nodes() == 0:
        return 0.0
    duration = durations(graph, costs)
    _check_acyclic(graph)
    levels = bottom_levels(graph, duration)
    tails = {node: levels[node] - duration[node] for node in graph}
    heads: dict[str, float] = {}
    for node in reversed(list(nx.topological_sort(graph))):
        heads[node] = max((heads[d] + duration[d] for d in graph.successors(node)), default=0.0)
    return max(_after_bound(heads, duration, workers), _after_bound(tails, duration, workers))


def _after_bound(earliest: Mapping[str, float], duration: Mapping[str, float],
                 workers: int) -> float:
    """max over t of t + sum(min(cost, earliest + cost - t), floored at 0) / workers."""
    # The sum is piecewise linear in t; its slope drops by one while a task's window is open.
    events = sorted([(earliest[n], -1) for n in earliest]
                    + [(earliest[n] + duration[n], +1) for n in earliest])
    remaining, slope, last, best = math.fsum(duration.values()), 0, 0.0, 0.0
    for time, change in events:
        remaining += slope * (time - last)
        best = max(best, time + remaining / workers)
        slope, last = slope + change, time
    return best


def simulate(graph: nx.DiGraph, costs: Mapping[str, float], workers: int,
             policy: str = CRITICAL_PATH_FIRST) -> Schedule:
    """Run every task of `graph` on `workers` identical workers under `policy`."""
    _check_workers(workers)
    if policy not in POLICIES:
        raise ConfigError(f"unknown scheduling policy {policy!r}; choose one of {POLICIES}")
    duration = durations(graph, costs)
    _check_acyclic(graph)
    if policy == LEVEL_BATCHES:
        rule: _Release = _LevelRelease(graph, duration)
    elif policy == CRITICAL_PATH_FIRST:
        levels = bottom_levels(graph, duration)
        rule = _DependencyRelease(graph, lambda node, _t: (-levels[node], node))
    else:
        order = execution_order(graph)
        rule = _DependencyRelease(graph, lambda node, t: (t, order[node]))
    return _run(graph, duration, workers, policy, rule)


def execution_order(graph: nx.DiGraph) -> dict[str, int]:
    """Position of each task in the lexicographically smallest dependencies-first order."""
    # Reversing the edges makes every dependency come before its dependents.
    ordered = nx.lexicographical_topological_sort(graph.reverse(copy=False), key=str)
    return {node: index for index, node in enumerate(ordered)}


class _Release(Protocol):
    """When tasks may start (`initial`, `finished`) and the order free workers take them."""

    def initial(self) -> Iterable[str]: ...

    def finished(self, node: str) -> Iterable[str]: ...

    def key(self, node: str, time: float) -> tuple[Hashable, ...]: ...


class _DependencyRelease:
    """Release a task the moment its last dependency finishes."""

    def __init__(self, graph: nx.DiGraph,
                 key: Callable[[str, float], tuple[Hashable, ...]]) -> None:
        self._graph = graph
        self._waiting = {node: graph.out_degree(node) for node in graph}
        self._key = key

    def initial(self) -> Iterable[str]:
        return [node for node, left in self._waiting.items() if left == 0]

    def finished(self, node: str) -> Iterable[str]:
        released = []
        for dependent in self._graph.predecessors(node):
            self._waiting[dependent] -= 1
            if self._waiting[dependent] == 0:
                released.append(dependent)
        return released

    def key(self, node: str, time: float) -> tuple[Hashable, ...]:
        return self._key(node, time)


class _LevelRelease:
    """Release topological level k + 1 only once all of level k is done."""

    def __init__(self, graph: nx.DiGraph, duration: Mapping[str, float]) -> None:
        self._levels = topological_levels(graph)
        self._level_of = {n: k for k, level in enumerate(self._levels) for n in level}
        self._left = [len(level) for level in self._levels]
        self._duration = duration

    def initial(self) -> Iterable[str]:
        return self._levels[0] if self._levels else []

    def finished(self, node: str) -> Iterable[str]:
        k = self._level_of[node]
        self._left[k] -= 1
        if self._left[k] == 0 and k + 1 < len(self._levels):
            return self._levels[k + 1]
        return []

    def key(self, node: str, time: float) -> tuple[Hashable, ...]:
        return (-self._duration[node], node)


def _run(graph: nx.DiGraph, duration: Mapping[str, float], workers: int, policy: str,
         rule: _Release) -> Schedule:
    start: dict[str, float] = {}
    finish: dict[str, float] = {}
    worker: dict[str, int] = {}
    ready: list[tuple[tuple[Hashable, ...], str]] = []
    running: list[tuple[float, int, str]] = []
    free = list(range(workers))
    now = 0.0
    for node in rule.initial():
        heapq.heappush(ready, (rule.key(node, now), node))
    while ready or running:
        while ready and free:
            _, node = heapq.heappop(ready)
            if node in start:
                raise PlanError(f"{policy} released task {node!r} twice")
            slot = heapq.heappop(free)
            start[node], finish[node], worker[node] = now, now + duration[node], slot
            heapq.heappush(running, (finish[node], slot, node))
        now = running[0][0]
        # Finish everything due now before anyone picks, so simultaneous releases compete.
        while running and running[0][0] == now:
            _, slot, node = heapq.heappop(running)
            heapq.heappush(free, slot)
            for released in rule.finished(node):
                heapq.heappush(ready, (rule.key(released, now), released))
    if len(finish) != graph.number_of_nodes():
        raise PlanError(f"{policy} left {graph.number_of_nodes() - len(finish)} tasks unrun")
    return Schedule(policy=policy, workers=workers, makespan=max(finish.values(), default=0.0),
                    start=start, finish=finish, worker=worker)


def _check_workers(workers: int) -> None:
    if workers < 1:
        raise ConfigError(f"need at least one worker, got {workers}")


def _check_acyclic(graph: nx.DiGraph) -> None:
    if not nx.is_directed_acyclic_graph(graph):
        cycle = [edge[0] for edge in nx.find_cycle(graph)]
        raise PlanError(f"dependency cycle: {' -> '.join(map(str, cycle))}", cycle=cycle)
