"""Critical-path priorities for a dependency graph.

Edges point from importer to imported (`a -> b`: a depends on b, so b runs first).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any, Protocol


class Graph(Protocol):
    """What these functions read of a graph: a `networkx.DiGraph`, or the analyzer's
    lighter `agents.analysis.graph.Digraph` (networkx costs a CLI 0.2 s to import)."""

    def __iter__(self) -> Iterator[Any]: ...
    def successors(self, node: Any) -> Iterable[Any]: ...
    def predecessors(self, node: Any) -> Iterable[Any]: ...
    def out_degree(self, node: Any) -> Any: ...
    def number_of_nodes(self) -> int: ...


def topological_order(graph: Graph) -> list[Any]:
    """Every node after the nodes it has edges from (Kahn). A cycle raises networkx's
    `NetworkXUnfeasible`, as `networkx.topological_sort` does."""
    indegree: dict[Hashable, int] = {node: 0 for node in graph}
    for node in indegree:
        for succ in graph.successors(node):
            indegree[succ] += 1
    ready = [node for node, d in indegree.items() if d == 0]
    order = []
    while ready:
        node = ready.pop()
        order.append(node)
        for succ in graph.successors(node):
            indegree[succ] -= 1
            if indegree[succ] == 0:
                ready.append(succ)
    if len(order) != len(indegree):
        import networkx as nx

        raise nx.NetworkXUnfeasible("Graph contains a cycle or graph changed during iteration")
    return order


def bottom_levels(graph: Graph, cost: Mapping[str, float]) -> dict[str, float]:
    """Longest cost path from each task to the end of the plan, the task's own cost included.

    Running the task with the highest bottom level first is the classic critical-path
    list-scheduling rule (HLFET). The graph must be acyclic.
    """
    levels: dict[str, float] = {}
    # Dependents of t are its predecessors (they import t); visit dependents first.
    for node in topological_order(graph):
        after = max((levels[d] for d in graph.predecessors(node)), default=0.0)
        levels[node] = float(cost.get(node, 1.0)) + after
    return levels


def critical_path(graph: Graph, cost: Mapping[str, float]) -> list[str]:
    """The chain of tasks, in execution order, whose costs sum to the longest path."""
    if graph.number_of_nodes() == 0:
        return []
    levels = bottom_levels(graph, cost)
    # Start at a task nothing must precede (no imports) with the highest bottom level.
    start = max((n for n in graph if graph.out_degree(n) == 0), key=lambda n: (levels[n], n))
    path = [start]
    node = start
    while True:
        dependents = list(graph.predecessors(node))
        if not dependents:
            return path
        node = max(dependents, key=lambda n: (levels[n], n))
        path.append(node)


def topological_levels(graph: Graph) -> list[list[str]]:
    """Tasks grouped by depth: level 0 depends on nothing, level k on something at k-1."""
    depth: dict[str, int] = {}
    for node in reversed(topological_order(graph)):
        depth[node] = 1 + max((depth[d] for d in graph.successors(node)), default=-1)
    levels: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node, d in depth.items():
        levels[d].append(node)
    return [sorted(level) for level in levels]
