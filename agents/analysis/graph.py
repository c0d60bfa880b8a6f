"""From edges to a schedule: cycles with witnesses, levels, critical path, priorities.

Cycles do not stop the analysis. Levels, the critical path and priorities are computed
on the condensation: each strongly connected component becomes one task whose cost is
the sum of its members' costs, and every member gets the component's level and
priority (self-loops vanish there). The critical path lists a component's members
together, sorted. A planner that needs a DAG calls `Analysis.require_acyclic()`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import networkx as nx

from agents.analysis.model import Cycle, Edge
from agents.scheduling.priority import bottom_levels, critical_path, topological_levels

LINES_PER_UNIT = 50.0
MIN_COST = 1.0


def estimate_cost(content: str | bytes | None) -> float:
    """One unit per 50 lines, never below 1.0; a file with no content costs 1.0."""
    if not content:
        return MIN_COST
    lines = 1 + (content.count(b"\n") if isinstance(content, bytes) else content.count("\n"))
    return max(MIN_COST, round(lines / LINES_PER_UNIT, 2))


def build_graph(files: Iterable[str], edges: Iterable[Edge]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    graph.add_edges_from(edges)
    return graph


def _witness(graph: nx.DiGraph, members: set[str], start: str) -> list[str]:
    """The shortest cycle through `start` inside `members` (breadth-first)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph.successors(node)):
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if succ in members and succ not in parent:
                parent[succ] = node
                queue.append(succ)
    raise AssertionError(f"{start} is on no cycle")  # SCC members always are


def find_cycles(graph: nx.DiGraph) -> list[Cycle]:
    """Every component of two or more files, and every self-import, with a witness."""
    cycles: list[Cycle] = []
    for component in nx.strongly_connected_components(graph):
        members = sorted(component)
        if len(members) == 1 and not graph.has_edge(members[0], members[0]):
            continue
        cycles.append(Cycle(tuple(members), tuple(_witness(graph, component, members[0]))))
    return sorted(cycles, key=lambda c: c.members)


def schedule(graph: nx.DiGraph, cost: Mapping[str, float]
             ) -> tuple[list[list[str]], list[str], dict[str, float]]:
    """(levels, critical path, priorities) on the condensation of `graph`."""
    components: Sequence[set[str]] = list(nx.strongly_connected_components(graph))
    condensed = nx.condensation(graph, scc=components)
    label = {i: min(components[i]) for i in condensed.nodes}
    members = {label[i]: sorted(components[i]) for i in condensed.nodes}
    dag = nx.relabel_nodes(condensed, label, copy=True)
    dag_cost = {name: sum(cost.get(m, MIN_COST) for m in group) for name, group in members.items()}

    levels = [sorted(m for name in level for m in members[name])
              for level in topological_levels(dag)]
    path = [m for name in critical_path(dag, dag_cost) for m in members[name]]
    bottom = bottom_levels(dag, dag_cost)
    priorities = {m: round(bottom[name], 6) for name, group in members.items() for m in group}
    return levels, path, priorities
