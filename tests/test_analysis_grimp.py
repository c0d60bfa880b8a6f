"""Our Python edges equal grimp's on real packages installed in the venv.

Internal edges are compared with grimp's default graph, externals with the graph built
with `include_external_packages=True` (which also adds an edge to the top-level package
for every internal import it cannot resolve, e.g. of a compiled extension; grimp's
default graph, like ours, has no edge for those).

The one documented difference: grimp only sees modules reachable through `__init__.py`
files, while we also read directories without one inside a package (PEP 420 namespace
subpackages, e.g. `networkx/algorithms/minors/tests/`). The comparison is made on the
modules grimp knows, and the extra files are checked to be exactly those.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import grimp
import pytest

from agents.analysis import analyze_path


def module_name(package: str, path: str) -> str:
    parts = [package, *path.removesuffix(".py").split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def in_namespace_dir(root: Path, path: str) -> bool:
    """True if some directory between the file and `root` has no __init__.py."""
    directory = (root / path).parent
    while directory != root:
        if not (directory / "__init__.py").exists():
            return True
        directory = directory.parent
    return False


@pytest.mark.parametrize("package", ["rich", "networkx", "hypothesis"])
def test_edges_and_externals_equal_grimp(package):
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    ours = analyze_path(root)
    assert ours.errors == []

    graph = grimp.build_graph(package, cache_dir=None)
    internal = set(graph.modules)
    theirs = {(m, i) for m in internal for i in graph.find_modules_directly_imported_by(m)}
    with_ext = grimp.build_graph(package, include_external_packages=True, cache_dir=None)
    theirs_ext = {(m, i) for m in internal for i in with_ext.find_modules_directly_imported_by(m)
                  if i not in internal}

    names = {path: module_name(package, path) for path in ours.files}
    extra_files = {path for path, name in names.items() if name not in internal}
    assert all(in_namespace_dir(root, path) for path in extra_files)
    assert set(names.values()) - {names[p] for p in extra_files} == internal

    edges = {(names[a], names[b]) for a, b in ours.edges if a not in extra_files}
    external = {(names[path], name) for path, found in ours.external.items()
                if path not in extra_files for name in found}
    assert edges == theirs
    assert external == theirs_ext
    # An import of a namespace-dir module is an edge to that file for us, to the
    # top package for grimp; none of these packages does that.
    assert all(b not in extra_files for _, b in ours.edges)
