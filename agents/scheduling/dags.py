"""Dependency graphs to schedule: seeded random layered plans and real package import graphs.

Edges point from importer to imported (`a -> b`: a depends on b, so b runs first).

`layered_dag` imitates the import graph of a code base: files sit in layers (leaf helpers at
the bottom, entry points at the top), every file imports at least one file of the layer just
below it (so its layer is its topological depth), a few more from lower layers, and some files
(`utils`, `exceptions`, `types`) are imported far more often than others.

The defaults sit near the import graph of the `networkx` package, scaled to 1,000 files and
erring towards more dependencies: networkx has 580 files in 10 levels, the widest at the
bottom, 2.3 internal imports per importing file (most modules just `import networkx as nx`,
which hides their real dependencies), a few hubs, and file sizes with a coefficient of
variation of 1.2. The defaults give 12 levels, about 3 imports per importing file, hubs
imported by 50-75 files, and durations with sigma 1 (coefficient of variation 1.3).
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import networkx as nx

from devline.errors import ConfigError

# Default cost unit of a real file: kilobytes, with a floor for the fixed cost of any task.
BYTES_PER_UNIT = 1000.0
FLOOR_BYTES = 1000


def layered_dag(n_tasks: int = 1000, n_layers: int = 12, mean_fan_in: float = 3.0,
                locality: float = 0.5, taper: float = 0.85, hub_alpha: float = 1.5,
                seed: int = 0) -> nx.DiGraph:
    """A random plan of `n_tasks` files in `n_layers` layers, the same for the same arguments.

    Layer k holds a share of the files proportional to `taper ** k`. A file in layer k >= 1
    imports `1 + Poisson(mean_fan_in - 1)` distinct files: one from layer k - 1, each other
    one from layer k - 1 with probability `locality`, else from a uniformly chosen lower
    layer. Within a layer, a file is picked with weight Pareto(`hub_alpha`), which makes a
    few hubs. Tasks are named `t0000`, `t0001`, ... from the bottom layer up.
    """
    if n_tasks < 0 or n_layers < 1 or mean_fan_in < 1 or not 0 <= locality <= 1:
        raise ConfigError("need n_tasks >= 0, n_layers >= 1, mean_fan_in >= 1, 0 <= locality <= 1")
    if taper <= 0 or hub_alpha <= 0:
        raise ConfigError("need taper > 0 and hub_alpha > 0")
    rng = random.Random(seed)
    sizes = _layer_sizes(n_tasks, min(n_layers, max(n_tasks, 1)), taper)
    graph = nx.DiGraph()
    layers: list[list[str]] = []
    cum_weights: list[list[float]] = []
    below = 0
    for k, size in enumerate(sizes):
        names = [f"t{below + i:04d}" for i in range(size)]
        graph.add_nodes_from(names, layer=k)
        for name in names:
            if layers:
                imports = _pick_imports(rng, layers, cum_weights, mean_fan_in, locality)
                graph.add_edges_from((name, target) for target in sorted(imports))
        popularity = [rng.paretovariate(hub_alpha) for _ in names]
        layers.append(names)
        cum_weights.append(list(itertools.accumulate(popularity)))
        below += size
    return graph


def lognormal_costs(graph: nx.DiGraph, mu: float = 0.0, sigma: float = 1.0,
                    seed: int = 0) -> dict[str, float]:
    """A log-normal duration per task (median `exp(mu)`), the same for the same seed."""
    rng = random.Random(seed)
    return {node: rng.lognormvariate(mu, sigma) for node in sorted(graph, key=str)}


def import_graph_costs(root: Path, floor_bytes: int = FLOOR_BYTES,
                       bytes_per_unit: float = BYTES_PER_UNIT, source: str = "auto",
                       ) -> tuple[nx.DiGraph, dict[str, float]]:
    """The import graph of the package at `root`, made acyclic, and a cost per file.

    A file costs `max(size, floor_bytes) / bytes_per_unit`. Imports come from
    `agents.analysis.analyze_path` when it is available, else from grimp (Python only);
    `source` ("auto", "analysis" or "grimp") picks one.
    A submodule's import of its own package (`import networkx as nx` inside networkx) is
    dropped: the package `__init__` only re-exports, and these imports make one big cycle.
    Any cycle left is broken by dropping one edge of it. `graph.graph` records the source
    and the dropped edges.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory")
    if source not in ("auto", "analysis", "grimp"):
        raise ConfigError(f"unknown import graph source {source!r}")
    graph = _analysis_graph(root) if source != "grimp" else None
    if graph is None and source == "analysis":
        raise ConfigError("agents.analysis.analyze_path is not available")
    source = "grimp" if graph is None else "analysis"
    if graph is None:
        graph = _grimp_graph(root)
    dropped = _make_acyclic(graph)
    graph.graph.update(source=source, root=str(root), dropped_edges=dropped)
    costs = {node: max(_size(root, node), floor_bytes) / bytes_per_unit for node in graph}
    return graph, costs


def _layer_sizes(n_tasks: int, n_layers: int, taper: float) -> list[int]:
    """Split `n_tasks` into layers proportional to taper**k, each layer non-empty."""
    if n_tasks == 0:
        return []
    weights = [taper**k for k in range(n_layers)]
    spare = n_tasks - n_layers
    shares = [spare * w / sum(weights) for w in weights]
    sizes = [1 + math.floor(s) for s in shares]
    # Largest remainders get the tasks that rounding down left over.
    by_remainder = sorted(range(n_layers), key=lambda k: (math.floor(shares[k]) - shares[k], k))
    for k in by_remainder[: n_tasks - sum(sizes)]:
        sizes[k] += 1
    return sizes


def _pick_imports(rng: random.Random, layers: list[list[str]], cum_weights: list[list[float]],
                  mean_fan_in: float, locality: float) -> set[str]:
    """What a file in the layer above `layers` imports: one file just below, maybe more."""
    top = len(layers) - 1
    wanted = min(1 + _poisson(rng, mean_fan_in - 1), sum(map(len, layers)))
    imports = {rng.choices(layers[top], cum_weights=cum_weights[top])[0]}
    # Bounded retries: small lower layers may run out of distinct files.
    for _ in range(4 * wanted):
        if len(imports) >= wanted:
            break
        j = top if rng.random() < locality else rng.randrange(top + 1)
        imports.add(rng.choices(layers[j], cum_weights=cum_weights[j])[0])
    return imports


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method; fine for the small means used here."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _analysis_graph(root: Path) -> nx.DiGraph | None:
    try:
        from agents.analysis import analyze_path
    except ImportError:
        return None
    analysis: Any = analyze_path(root)
    graph = nx.DiGraph(analysis.graph)
    for file in analysis.files:
        if file not in graph and str(file) not in graph:
            graph.add_node(str(file))
    return graph


def _grimp_graph(root: Path) -> nx.DiGraph:
    """Module import graph from grimp, with nodes named by file path relative to `root`."""
    import grimp

    if not (root / "__init__.py").is_file():
        raise ConfigError(f"{root} is not a Python package (no __init__.py)")
    sys.path.insert(0, str(root.parent))
    try:
        imports = grimp.build_graph(root.name, exclude_type_checking_imports=True,
                                    cache_dir=None)
    except Exception as exc:
        raise ConfigError(f"grimp could not read the package at {root}: {exc}") from exc
    finally:
        sys.path.remove(str(root.parent))
    files = {module: _module_file(root, module) for module in sorted(imports.modules)}
    if not any((root / f).is_file() for f in files.values()):
        raise ConfigError(f"grimp found package {root.name!r} somewhere other than {root}")
    graph = nx.DiGraph()
    graph.add_nodes_from(files.values())
    for module in sorted(files):
        for imported in sorted(imports.find_modules_directly_imported_by(module)):
            graph.add_edge(files[module], files[imported])
    return graph


def _module_file(root: Path, module: str) -> str:
    parts = module.split(".")[1:]
    package = root.joinpath(*parts)
    if (package / "__init__.py").is_file():
        return PurePosixPath(*parts, "__init__.py").as_posix()
    return PurePosixPath(*parts[:-1], parts[-1] + ".py").as_posix()


def _make_acyclic(graph: nx.DiGraph) -> list[tuple[str, str]]:
    """Drop self-imports, imports of a file's own parent packages, then one edge per cycle."""
    dropped = [(a, b) for a, b in graph.edges if a == b or _imports_own_package(a, b)]
    graph.remove_edges_from(dropped)
    while True:
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            return dropped
        # The edge that closes the cycle, as found from a deterministic starting point.
        a, b = cycle[-1][:2]
        graph.remove_edge(a, b)
        dropped.append((a, b))


def _imports_own_package(importer: Any, imported: Any) -> bool:
    target = PurePosixPath(str(imported))
    if target.name != "__init__.py":
        return False
    return target.parent in PurePosixPath(str(importer)).parents


def _size(root: Path, node: Any) -> int:
    """Bytes of the file a node names (relative to `root` or absolute); 0 if it is missing."""
    path = Path(str(node))
    for candidate in (path, root / path) if path.is_absolute() else (root / path,):
        if candidate.is_file():
            return candidate.stat().st_size
    return 0
