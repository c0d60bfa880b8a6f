"""Plain result types of the dependency analysis, shared by the scanners and the graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devline.errors import PlanError

if TYPE_CHECKING:  # networkx loads when `Analysis.graph` is asked for, not to analyse
    import networkx as nx

Edge = tuple[str, str]
JSON_KEYS = ("root", "files", "edges", "external", "cycles", "levels", "critical_path",
             "priorities", "stats")


@dataclass
class ScanResult:
    """What one language scanner found: internal edges, external names, problems."""

    edges: set[Edge] = field(default_factory=set)
    external: dict[str, set[str]] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    unresolved: int = 0
    parsed: int = 0

    def add_external(self, path: str, name: str) -> None:
        """Record that `path` imports the external (third-party/stdlib/npm) `name`."""
        self.external.setdefault(path, set()).add(name)

    def error(self, path: str, message: str) -> None:
        """Record a file the scanner could not read fully; the analysis goes on."""
        self.errors.append({"file": path, "message": message})

    def merge(self, other: ScanResult) -> None:
        """Fold another scanner's result into this one."""
        self.edges |= other.edges
        for path, names in other.external.items():
            self.external.setdefault(path, set()).update(names)
        self.errors.extend(other.errors)
        self.unresolved += other.unresolved
        self.parsed += other.parsed


@dataclass(frozen=True)
class Cycle:
    """One strongly connected component of two or more files, or a file importing itself.

    `witness` is one concrete cycle through the component's first member,
    starting and ending with it, e.g. ["a.py", "b.py", "a.py"].
    """

    members: tuple[str, ...]
    witness: tuple[str, ...]

    def to_json(self) -> dict[str, list[str]]:
        return {"members": list(self.members), "witness": list(self.witness)}


@dataclass
class Analysis:
    """A file dependency graph with its cycles, schedule levels and priorities.

    Edges point from importer to imported: `(a, b)` means a depends on b, so b is
    built first. Paths are relative to `root` and `/`-separated.
    """

    root: str
    files: list[str]
    edges: list[Edge]
    external: dict[str, list[str]]
    cycles: list[Cycle]
    levels: list[list[str]]
    critical_path: list[str]
    priorities: dict[str, float]
    stats: dict[str, Any]
    costs: dict[str, float] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def graph(self) -> nx.DiGraph:
        """A fresh `networkx.DiGraph` of the files, each node carrying its `cost`."""
        import networkx as nx

        graph = nx.DiGraph()
        for path in self.files:
            graph.add_node(path, cost=self.costs.get(path, 1.0))
        graph.add_edges_from(self.edges)
        return graph

    @property
    def acyclic(self) -> bool:
        return not self.cycles

    def require_acyclic(self) -> None:
        """Raise `PlanError` naming the first cycle, if there is one."""
        if self.cycles:
            witness = list(self.cycles[0].witness)
            raise PlanError(f"dependency cycle: {' -> '.join(witness)}",
                            field="files", cycle=witness)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with exactly the keys of `JSON_KEYS`."""
        return {
            "root": self.root,
            "files": sorted(self.files),
            "edges": [[a, b] for a, b in sorted(self.edges)],
            "external": {path: list(names) for path, names in sorted(self.external.items())},
            "cycles": [cycle.to_json() for cycle in self.cycles],
            "levels": [list(level) for level in self.levels],
            "critical_path": list(self.critical_path),
            "priorities": dict(sorted(self.priorities.items())),
            "stats": dict(self.stats),
        }
