"""Dependency analysis of a source tree: which file imports which, and in what order to build.

Pure Python, no broker. Two entry points share one pipeline:

- `analyze_path(root)` scans a directory tree on disk;
- `analyze_sources(files)` analyses in-memory contents, e.g. the files of a plan, with
  optional declared dependencies.

Edges point from importer to imported (`a -> b`: b is built first). Python imports follow
grimp's semantics, JavaScript/TypeScript imports dependency-cruiser's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from agents.analysis import parallel
from agents.analysis.graph import build_graph, estimate_cost, find_cycles, schedule
from agents.analysis.js_imports import scan_js
from agents.analysis.model import JSON_KEYS, Analysis, Cycle, Edge, ScanResult
from agents.analysis.python_imports import scan_python
from agents.analysis.tree import discover, is_source, is_tsconfig, normalize
from devline.errors import PlanError

__all__ = ["JSON_KEYS", "Analysis", "Cycle", "analyze_path", "analyze_sources"]

Content = str | bytes | None


def analyze_path(root: Path, *, costs: Mapping[str, float] | None = None,
                 check_syntax: bool = False, jobs: int = 1) -> Analysis:
    """Analyse every Python and JS/TS file under `root`.

    Skips node_modules, .git, .venv, __pycache__, dist, build and hidden directories.
    Python imports are found without parsing each file whole (`scan_python`); with
    `check_syntax` every file is parsed, and those that do not parse are reported.
    `jobs` > 1 scans a big tree in that many processes (forked, same result).
    Raises `FileNotFoundError` / `NotADirectoryError` for a bad `root`.
    """
    started = time.perf_counter()
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such directory: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    contents: dict[str, Content] = dict(discover(root))
    files = sorted(p for p in contents if is_source(p))
    return _analyze(str(root), root.resolve().name, files, contents, _clean_costs(costs),
                    set(), started, check_syntax, jobs)


def analyze_sources(files: Mapping[str, str | None], *, root_name: str = ".",
                    costs: Mapping[str, float] | None = None,
                    declared: Mapping[str, Sequence[str]] | None = None) -> Analysis:
    """Analyse in-memory files keyed by relative path; `None` content infers no edges.

    `declared` adds edges `path -> dependency` on top of the inferred ones. Raises
    `WorkspaceError` for absolute or escaping paths and `PlanError` for duplicate paths
    or declared dependencies on files that are not in `files`.
    """
    started = time.perf_counter()
    contents: dict[str, Content] = {}
    for raw, text in files.items():
        path = normalize(raw)
        if path in contents:
            raise PlanError(f"duplicate file path: {raw!r}", field="files")
        contents[path] = text
    extra: set[Edge] = set()
    for raw, deps in (declared or {}).items():
        path = normalize(raw)
        if path not in contents:
            raise PlanError(f"dependencies declared for unknown file {raw!r}", field="files")
        for dep in [deps] if isinstance(deps, str) else deps:
            target = normalize(dep)
            if target not in contents:
                raise PlanError(f"{path} depends on {dep!r}, which is not in the plan",
                                field=f"files[{path}].depends_on")
            extra.add((path, target))
    return _analyze(root_name, root_name, sorted(contents), contents, _clean_costs(costs),
                    extra, started)


def _analyze(root: str, root_name: str, files: list[str], contents: Mapping[str, Content],
             costs: Mapping[str, float], declared: set[Edge], started: float,
             check_syntax: bool = True, jobs: int = 1) -> Analysis:
    """The shared pipeline: scan both languages, add declared edges, schedule."""
    python = {p: contents[p] for p in files if p.endswith(".py")}
    texts = {p: _text(contents[p]) for p in files if not p.endswith(".py") and is_source(p)}
    configs = {p: _text(c) for p, c in contents.items() if is_tsconfig(p)}
    result = parallel.run(_scans(python, texts, files, configs, root_name, check_syntax, jobs))
    result.errors.sort(key=lambda error: error["file"])  # the same whichever process found it
    result.edges |= declared

    graph = build_graph(files, result.edges)
    cost = {p: float(costs[p]) if p in costs else estimate_cost(contents.get(p)) for p in files}
    cycles = find_cycles(graph)
    levels, path, priorities = schedule(graph, cost)
    external = {p: sorted(names) for p, names in result.external.items()}
    stats = {
        "files": len(files),
        "python_files": len(python),
        "js_files": len(texts),
        "parsed_files": result.parsed,
        "edges": graph.number_of_edges(),
        "declared_edges": len(declared),
        "externals": len({name for names in external.values() for name in names}),
        "cycles": len(cycles),
        "max_depth": max(len(levels) - 1, 0),
        "longest_path_cost": round(sum(cost[p] for p in path), 6),
        "unresolved_imports": result.unresolved,
        "parse_errors": len(result.errors),
        "errors": list(result.errors),
        "seconds": round(time.perf_counter() - started, 4),
    }
    return Analysis(root=root, files=files, edges=sorted(graph.edges), external=external,
                    cycles=cycles, levels=levels, critical_path=path, priorities=priorities,
                    stats=stats, costs=cost, errors=list(result.errors))


def _scans(python: Mapping[str, Content], texts: Mapping[str, str | None], files: list[str],
           configs: Mapping[str, str | None], root_name: str, check_syntax: bool,
           jobs: int) -> list[parallel.Scan]:
    """The scans to run: one of everything, or (big tree, `jobs` > 1) the JS/TS files and
    shares of the Python files, about equal in cost; the last share has the JS/TS."""
    def js() -> ScanResult:
        return scan_js(texts, files, configs)

    def py(only: Collection[str] | None = None) -> Callable[[], ScanResult]:
        return lambda: scan_python(python, root_name=root_name, check_syntax=check_syntax,
                                   only=None if only is None else set(only))

    sizes = {p: len(c) for p, c in python.items() if c is not None}
    js_size = sum(len(t) for t in texts.values() if t is not None)
    if jobs <= 1 or sum(sizes.values()) + js_size < parallel.MIN_PARALLEL_BYTES:
        return [py(), js]
    shares = parallel.split(sizes, jobs, fixed=parallel.JS_WEIGHT * js_size)

    def last() -> ScanResult:
        found = py(shares[-1])()
        found.merge(js())
        return found

    return [*(py(share) for share in shares[:-1]), last]


def _clean_costs(costs: Mapping[str, float] | None) -> dict[str, float]:
    """Costs keyed by normalised path; raise `PlanError` for a negative or non-finite one."""
    clean: dict[str, float] = {}
    for raw, value in (costs or {}).items():
        try:
            cost = float(value)
        except (TypeError, ValueError) as exc:
            raise PlanError(f"cost of {raw!r} is not a number", field="costs") from exc
        if not math.isfinite(cost) or cost < 0:
            raise PlanError(f"cost of {raw!r} must be finite and >= 0", field="costs")
        clean[normalize(raw)] = cost
    return clean


def _text(content: Content) -> str | None:
    if isinstance(content, bytes):
        return content.decode("utf-8", errors="replace")
    return content
