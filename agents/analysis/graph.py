"""From edges to a schedule: cycles with witnesses, levels, critical path, priorities.

Cycles do not stop the analysis. Levels, the critical path and priorities are computed
on the condensation: each strongly connected component becomes one task whose cost is
the sum of its members' costs, and every member gets the component's level and
priority (self-loops vanish there). The critical path lists a component's members
together, sorted. A planner that needs a DAG calls `Analysis.require_acyclic()`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence

from agents.analysis.model import Cycle, Edge
from agents.scheduling.priority import bottom_levels, critical_path, topological_levels


class Digraph:
    """The directed graph the analysis needs, in plain dicts: networkx would cost
    `devline analyze` 0.2 s to import for four algorithms. `Analysis.graph` still hands
    out a `networkx.DiGraph`."""

    def __init__(self) -> None:
        self._succ: dict[str, set[str]] = {}
        self._pred: dict[str, set[str]] = {}

    def add_node(self, node: str) -> None:
        if node not in self._succ:
            self._succ[node] = set()
            self._pred[node] = set()

    def add_nodes_from(self, nodes: Iterable[str]) -> None:
        for node in nodes:
            self.add_node(node)

    def add_edges_from(self, edges: Iterable[Edge]) -> None:
        for a, b in edges:
            self.add_node(a)
            self.add_node(b)
            self._succ[a].add(b)
            self._pred[b].add(a)

    def __iter__(self) -> Iterator[str]:
        return iter(self._succ)

    def __contains__(self, node: object) -> bool:
        return node in self._succ

    def successors(self, node: str) -> Iterable[str]:
        return self._succ[node]

    def predecessors(self, node: str) -> Iterable[str]:
        return self._pred[node]

    def has_edge(self, a: str, b: str) -> bool:
        return b in self._succ.get(a, ())

    def out_degree(self, node: str) -> int:
        return len(self._succ[node])

    def number_of_nodes(self) -> int:
        return len(self._succ)

    def number_of_edges(self) -> int:
        return sum(len(s) for s in self._succ.values())

    @property
    def edges(self) -> list[Edge]:
        return [(a, b) for a, succ in self._succ.items() for b in succ]


def strongly_connected_components(graph: Digraph) -> list[set[str]]:
    """Tarjan's algorithm without recursion (import chains run thousands deep)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(graph.successors(root)))]
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.successors(child))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    found.append(component)
    return found


LINES_PER_UNIT = 50.0
MIN_COST = 1.0


def estimate_cost(content: str | bytes | None) -> float:
    """One unit per 50 lines, never below 1.0; a file with no content costs 1.0."""
    if not content:
        return MIN_COST
    lines = 1 + (content.count(b"\n") if isinstance(content, bytes) else content.count("\n"))
    return max(MIN_COST, round(lines / LINES_PER_UNIT, 2))


def build_graph(files: Iterable[str], edges: Iterable[Edge]) -> Digraph:
    graph = Digraph()
    graph.add_nodes_from(files)
    graph.add_edges_from(edges)
    return graph


def _witness(graph: Digraph, members: set[str], start: str) -> list[str]:
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


def find_cycles(graph: Digraph) -> list[Cycle]:
    """Every component of two or more files, and every self-import, with a witness."""
    cycles: list[Cycle] = []
    for component in strongly_connected_components(graph):
        members = sorted(component)
        if len(members) == 1 and not graph.has_edge(members[0], members[0]):
            continue
        cycles.append(Cycle(tuple(members), tuple(_witness(graph, component, members[0]))))
    return sorted(cycles, key=lambda c: c.members)


def schedule(graph: Digraph, cost: Mapping[str, float]
             ) -> tuple[list[list[str]], list[str], dict[str, float]]:
    """(levels, critical path, priorities) on the condensation of `graph`."""
    components: Sequence[set[str]] = strongly_connected_components(graph)
    label = {m: min(group) for group in components for m in group}
    members = {min(group): sorted(group) for group in components}
    dag = Digraph()
    dag.add_nodes_from(members)
    dag.add_edges_from((label[a], label[b]) for a, b in graph.edges if label[a] != label[b])
    dag_cost = {name: sum(cost.get(m, MIN_COST) for m in group) for name, group in members.items()}

    levels = [sorted(m for name in level for m in members[name])
              for level in topological_levels(dag)]
    path = [m for name in critical_path(dag, dag_cost) for m in members[name]]
    bottom = bottom_levels(dag, dag_cost)
    priorities = {m: round(bottom[name], 6) for name, group in members.items() for m in group}
    return levels, path, priorities
