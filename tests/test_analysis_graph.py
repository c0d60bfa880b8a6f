"""Cycles, levels, priorities, the public API and generated trees (hypothesis)."""

from __future__ import annotations

import json
from itertools import pairwise

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.analysis import JSON_KEYS, analyze_path, analyze_sources
from agents.analysis.graph import estimate_cost
from devline.errors import PlanError, WorkspaceError

DIAMOND = {"top.py": "import left, right\n", "left.py": "import bottom\n",
           "right.py": "import bottom\n", "bottom.py": ""}


def test_levels_critical_path_and_priorities_on_a_dag():
    costs = {"top.py": 1, "left.py": 2, "right.py": 5, "bottom.py": 1}
    analysis = analyze_sources(DIAMOND, costs=costs)
    assert analysis.levels == [["bottom.py"], ["left.py", "right.py"], ["top.py"]]
    assert analysis.critical_path == ["bottom.py", "right.py", "top.py"]
    assert analysis.priorities == {"top.py": 1.0, "left.py": 3.0, "right.py": 6.0,
                                   "bottom.py": 7.0}
    assert analysis.stats["longest_path_cost"] == 7.0
    assert analysis.stats["max_depth"] == 2
    assert analysis.cycles == []


def test_cycle_members_witness_and_condensed_schedule():
    files = {"a.py": "import b\n", "b.py": "import c\n", "c.py": "import a\nimport base\n",
             "d.py": "import a\n", "base.py": "", "self.py": "import self\n"}
    analysis = analyze_sources(files, costs=dict.fromkeys(files, 1.0))
    assert [(list(c.members), list(c.witness)) for c in analysis.cycles] == [
        (["a.py", "b.py", "c.py"], ["a.py", "b.py", "c.py", "a.py"]),
        (["self.py"], ["self.py", "self.py"]),
    ]
    # The component is one task of cost 3 between base.py and d.py.
    assert analysis.levels == [["base.py", "self.py"], ["a.py", "b.py", "c.py"], ["d.py"]]
    assert analysis.critical_path == ["base.py", "a.py", "b.py", "c.py", "d.py"]
    assert analysis.priorities["a.py"] == analysis.priorities["c.py"] == 4.0
    assert analysis.priorities["base.py"] == 5.0
    with pytest.raises(PlanError) as caught:
        analysis.require_acyclic()
    assert caught.value.cycle == ["a.py", "b.py", "c.py", "a.py"]


def test_witness_is_a_real_cycle_in_a_dense_component():
    files = {f"m{i}.py": "".join(f"import m{j}\n" for j in range(6) if j != i)
             for i in range(6)}
    analysis = analyze_sources(files)
    (cycle,) = analysis.cycles
    assert cycle.witness[0] == cycle.witness[-1] == "m0.py"
    assert all(analysis.graph.has_edge(a, b) for a, b in pairwise(cycle.witness))


def test_costs_default_to_a_size_estimate_with_a_floor():
    assert estimate_cost(None) == estimate_cost("") == estimate_cost("x = 1\n") == 1.0
    assert estimate_cost("x\n" * 500) == pytest.approx(10.02)
    assert estimate_cost(b"x\n" * 500) == estimate_cost("x\n" * 500)
    analysis = analyze_sources({"big.py": "x = 1\n" * 200, "empty.py": None})
    assert analysis.costs == {"big.py": 4.02, "empty.py": 1.0}


def test_declared_dependencies_and_files_without_content():
    files = {"api/schema.py": None, "api/server.py": None, "web/app.ts": "import './x'",
             "web/x.ts": "", "README.md": None}
    declared = {"api/server.py": ["api/schema.py"], "./web/app.ts": ["README.md"]}
    analysis = analyze_sources(files, declared=declared)
    assert analysis.edges == [("api/server.py", "api/schema.py"), ("web/app.ts", "README.md"),
                              ("web/app.ts", "web/x.ts")]
    assert analysis.stats["declared_edges"] == 2
    assert analysis.files == sorted(files)


@pytest.mark.parametrize(("files", "declared", "error"), [
    ({"/etc/passwd": None}, None, WorkspaceError),
    ({"../up.py": None}, None, WorkspaceError),
    ({"a.py": None, "./a.py": None}, None, PlanError),
    ({"a.py": None}, {"a.py": ["b.py"]}, PlanError),
    ({"a.py": None}, {"b.py": ["a.py"]}, PlanError),
])
def test_invalid_plans_raise_plan_errors(files, declared, error):
    with pytest.raises(error):
        analyze_sources(files, declared=declared)


@pytest.mark.parametrize("cost", [-1, float("nan"), float("inf"), "lots"])
def test_invalid_costs_raise_plan_errors(cost):
    with pytest.raises(PlanError):
        analyze_sources({"a.py": None}, costs={"a.py": cost})


def test_to_json_shape_and_order():
    analysis = analyze_sources({"b.py": "import a\nimport os\n", "a.py": "import b\n"})
    data = json.loads(json.dumps(analysis.to_json()))
    assert set(data) == set(JSON_KEYS)
    assert data["files"] == ["a.py", "b.py"]
    assert data["edges"] == [["a.py", "b.py"], ["b.py", "a.py"]]
    assert data["external"] == {"b.py": ["os"]}
    assert data["cycles"] == [{"members": ["a.py", "b.py"], "witness": ["a.py", "b.py", "a.py"]}]
    for key in ("files", "edges", "externals", "cycles", "max_depth", "longest_path_cost",
                "parse_errors", "seconds"):
        assert key in data["stats"]


def test_graph_property_is_a_networkx_digraph():
    graph = analyze_sources(DIAMOND).graph
    assert isinstance(graph, nx.DiGraph)
    assert set(graph.successors("top.py")) == {"left.py", "right.py"}
    assert graph.nodes["bottom.py"]["cost"] == 1.0


def test_analyze_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        analyze_path(tmp_path / "missing")
    (tmp_path / "file.py").write_text("")
    with pytest.raises(NotADirectoryError):
        analyze_path(tmp_path / "file.py")


def _module_dag() -> st.SearchStrategy[tuple[int, set[tuple[int, int]], list[int]]]:
    """(n, edges i -> j with i > j, the import form to use for each edge)."""
    def build(n: int) -> st.SearchStrategy[tuple[int, set[tuple[int, int]], list[int]]]:
        pairs = [(i, j) for i in range(n) for j in range(i)]
        edges = st.sets(st.sampled_from(pairs), max_size=40) if pairs else st.just(set())
        return edges.flatmap(lambda es: st.tuples(
            st.just(n), st.just(es), st.lists(st.integers(0, 5), min_size=len(es),
                                              max_size=len(es))))
    return st.integers(1, 12).flatmap(build)


PY_FORMS = ["import pkg.m{j}", "from pkg import m{j}", "from . import m{j}",
            "from .m{j} import name", "import pkg.m{j} as alias",
            "def f():\n    from pkg.m{j} import *"]
JS_FORMS = ["import x{j} from './m{j}'", "export * from './m{j}.js'", "import './m{j}'",
            "const x{j} = require('./m{j}')", "await import('./m{j}.js')",
            "import type {{ T{j} }} from \"./m{j}\""]


@settings(max_examples=60, deadline=None)
@given(_module_dag())
def test_generated_python_package_recovers_every_edge(dag):
    n, edges, forms = dag
    lines: dict[int, list[str]] = {i: [] for i in range(n)}
    for (i, j), form in zip(sorted(edges), forms, strict=True):
        lines[i].append(PY_FORMS[form].format(j=j))
    files = {f"pkg/m{i}.py": "\n".join(src) + "\n" for i, src in lines.items()}
    files["pkg/__init__.py"] = ""
    analysis = analyze_sources(files)
    assert set(analysis.edges) == {(f"pkg/m{i}.py", f"pkg/m{j}.py") for i, j in edges}
    assert analysis.cycles == []
    level = {f: k for k, group in enumerate(analysis.levels) for f in group}
    for a, b in analysis.edges:  # dependencies come first and matter more
        assert level[a] > level[b]
        assert analysis.priorities[b] > analysis.priorities[a]


@settings(max_examples=60, deadline=None)
@given(_module_dag())
def test_generated_ts_tree_recovers_every_edge(dag):
    n, edges, forms = dag
    lines: dict[int, list[str]] = {i: [] for i in range(n)}
    for (i, j), form in zip(sorted(edges), forms, strict=True):
        lines[i].append(JS_FORMS[form].format(j=j))
    files = {f"src/m{i}.ts": ";\n".join(src) + "\n" for i, src in lines.items()}
    analysis = analyze_sources(files, costs=dict.fromkeys(files, 1.0))
    assert set(analysis.edges) == {(f"src/m{i}.ts", f"src/m{j}.ts") for i, j in edges}
    # With unit costs the critical path is a deepest chain: one file per level.
    assert len(analysis.critical_path) == len(analysis.levels)
