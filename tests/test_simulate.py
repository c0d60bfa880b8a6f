"""Scheduling simulator, random plan generator and real import graphs: pure and fast."""

from __future__ import annotations

import itertools
import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.scheduling.dags import import_graph_costs, layered_dag, lognormal_costs
from agents.scheduling.priority import bottom_levels, topological_levels
from agents.scheduling.simulate import (
    CRITICAL_PATH_FIRST,
    FIFO_TOPOLOGICAL,
    LEVEL_BATCHES,
    POLICIES,
    Schedule,
    interval_lower_bound,
    lower_bound,
    simulate,
)
from devline.errors import ConfigError, PlanError

EPS = 1e-9


def dag(edges: Sequence[tuple[str, str]], nodes: Sequence[str] = ()) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    return graph


def assert_valid(graph: nx.DiGraph, costs: dict[str, float], schedule: Schedule,
                 workers: int) -> None:
    """Every task ran once for its duration, after its deps, on at most `workers` workers."""
    assert set(schedule.start) == set(schedule.finish) == set(schedule.worker) == set(graph)
    for node in graph:
        assert schedule.start[node] >= 0
        assert schedule.finish[node] == pytest.approx(schedule.start[node] + costs[node])
        assert 0 <= schedule.worker[node] < workers
    for importer, imported in graph.edges:
        assert schedule.start[importer] >= schedule.finish[imported] - EPS, (importer, imported)
    by_worker = defaultdict(list)
    for node in graph:
        by_worker[schedule.worker[node]].append((schedule.start[node], schedule.finish[node]))
    for spans in by_worker.values():
        spans.sort()
        for (_, end), (begin, _) in itertools.pairwise(spans):
            assert begin >= end - EPS
    # Independent of worker ids: count tasks running in half-open [start, finish) intervals.
    events = sorted([(schedule.finish[n], -1) for n in graph if costs[n] > 0]
                    + [(schedule.start[n], +1) for n in graph if costs[n] > 0])
    running = 0
    for _, delta in events:
        running += delta
        assert running <= workers
    assert schedule.makespan == max(schedule.finish.values(), default=0.0)


# --- hand-made plans with a known best order -------------------------------------------------

def chain_and_independents() -> tuple[nx.DiGraph, dict[str, float]]:
    """A 3-task chain z1 <- z2 <- z3 and three independent tasks; names favour the latter."""
    graph = dag([("z2", "z1"), ("z3", "z2")], nodes=["a1", "a2", "a3"])
    return graph, dict.fromkeys(graph, 1.0)


def test_critical_path_first_starts_the_chain_at_once_and_reaches_the_bound():
    graph, costs = chain_and_independents()
    schedule = simulate(graph, costs, 2, CRITICAL_PATH_FIRST)
    assert_valid(graph, costs, schedule, 2)
    assert schedule.start == {"z1": 0, "a1": 0, "z2": 1, "a2": 1, "z3": 2, "a3": 2}
    assert schedule.makespan == 3 == lower_bound(graph, costs, 2)


def test_fifo_runs_ready_tasks_in_topological_order_and_delays_the_chain():
    graph, costs = chain_and_independents()
    schedule = simulate(graph, costs, 2, FIFO_TOPOLOGICAL)
    assert_valid(graph, costs, schedule, 2)
    assert schedule.start == {"a1": 0, "a2": 0, "a3": 1, "z1": 1, "z2": 2, "z3": 3}
    assert schedule.makespan == 4 > simulate(graph, costs, 2, CRITICAL_PATH_FIRST).makespan


def test_fifo_serves_earlier_releases_first():
    # Topological order is x, b, y; y was released at 0 and b at 1, so y still goes first.
    graph = dag([("b", "x")], nodes=["y"])
    costs = dict.fromkeys(graph, 1.0)
    fifo = simulate(graph, costs, 1, FIFO_TOPOLOGICAL)
    assert fifo.start == {"x": 0, "y": 1, "b": 2}
    # Critical-path-first sees y and b tie on bottom level and takes them by name.
    assert simulate(graph, costs, 1, CRITICAL_PATH_FIRST).start == {"x": 0, "b": 1, "y": 2}


def test_level_batches_leave_a_worker_idle_until_the_level_is_done():
    # x2 could start at 1, but level batches wait for the long y of the same level.
    graph = dag([("x2", "x")], nodes=["y"])
    costs = {"x": 1.0, "y": 3.0, "x2": 2.0}
    batches = simulate(graph, costs, 2, LEVEL_BATCHES)
    assert_valid(graph, costs, batches, 2)
    assert batches.start["x2"] == 3 and batches.makespan == 5
    eager = simulate(graph, costs, 2, CRITICAL_PATH_FIRST)
    assert eager.start["x2"] == 1 and eager.makespan == 3 == lower_bound(graph, costs, 2)


def test_level_batches_run_the_longest_task_of_a_level_first():
    graph = dag([], nodes=["a", "b", "c"])
    costs = {"a": 1.0, "b": 3.0, "c": 2.0}
    schedule = simulate(graph, costs, 1, LEVEL_BATCHES)
    assert [n for n in sorted(graph, key=schedule.start.get)] == ["b", "c", "a"]


def test_critical_path_first_prefers_the_task_with_more_work_behind_it():
    # Both roots are ready at 0 and cost the same; r2 has a long dependent, r1 a short one.
    graph = dag([("d1", "r1"), ("d2", "r2")])
    costs = {"r1": 1.0, "r2": 1.0, "d1": 1.0, "d2": 5.0}
    schedule = simulate(graph, costs, 1, CRITICAL_PATH_FIRST)
    assert schedule.start["r2"] == 0 and schedule.start["d2"] == 1


def test_empty_plan_takes_no_time():
    for policy in POLICIES:
        assert simulate(nx.DiGraph(), {}, 3, policy).makespan == 0
    assert lower_bound(nx.DiGraph(), {}, 3) == 0


def test_zero_duration_tasks_release_their_dependents_at_once():
    graph = dag([("b", "a"), ("c", "b")])
    costs = {"a": 0.0, "b": 0.0, "c": 2.0}
    for policy in POLICIES:
        schedule = simulate(graph, costs, 1, policy)
        assert_valid(graph, costs, schedule, 1)
        assert schedule.makespan == 2


def test_lower_bound_is_the_larger_of_critical_path_and_work_per_worker():
    graph, costs = chain_and_independents()
    assert lower_bound(graph, costs, 1) == 6
    assert lower_bound(graph, costs, 2) == 3
    assert lower_bound(graph, costs, 16) == 3


def test_interval_bound_sees_work_that_must_wait_for_its_dependencies():
    # Three unit roots then one unit task on two workers: the roots need two rounds.
    graph = dag([("d", "r1"), ("d", "r2"), ("d", "r3")])
    costs = dict.fromkeys(graph, 1.0)
    assert lower_bound(graph, costs, 2) == 2
    assert interval_lower_bound(graph, costs, 2) == 2.5
    assert simulate(graph, costs, 2).makespan == 3
    assert interval_lower_bound(nx.DiGraph(), {}, 2) == 0


def test_bad_input_is_refused():
    graph, costs = chain_and_independents()
    with pytest.raises(ConfigError):
        simulate(graph, costs, 0)
    with pytest.raises(ConfigError):
        simulate(graph, costs, 2, "random")
    with pytest.raises(PlanError):
        simulate(graph, {**costs, "a1": -1.0}, 2)
    with pytest.raises(PlanError) as caught:
        simulate(dag([("a", "b"), ("b", "a")]), {}, 2)
    assert set(caught.value.cycle) == {"a", "b"}


# --- every policy on random plans ------------------------------------------------------------

@st.composite
def plans(draw: st.DrawFn) -> tuple[nx.DiGraph, dict[str, float]]:
    """A random DAG with names shuffled against its topological order, and durations."""
    n = draw(st.integers(0, 24))
    names = draw(st.permutations([f"n{i:02d}" for i in range(n)]))
    pairs = st.integers(1, max(n - 1, 1)).flatmap(lambda i: st.tuples(st.just(i),
                                                                      st.integers(0, i - 1)))
    edges = draw(st.lists(pairs, max_size=3 * n)) if n > 1 else []
    durations = st.one_of(st.integers(0, 6).map(float), st.floats(0.01, 50.0))
    graph = dag([(names[i], names[j]) for i, j in edges], nodes=names)
    return graph, {name: draw(durations) for name in names}


@settings(max_examples=300, deadline=None)
@given(plans(), st.integers(1, 6))
def test_every_policy_gives_a_valid_schedule_no_shorter_than_the_bound(plan, workers):
    graph, costs = plan
    simple = lower_bound(graph, costs, workers)
    bound = interval_lower_bound(graph, costs, workers)
    assert bound >= simple * (1 - 1e-12) - EPS
    for policy in POLICIES:
        schedule = simulate(graph, costs, workers, policy)
        assert_valid(graph, costs, schedule, workers)
        assert schedule.makespan >= bound * (1 - 1e-12) - EPS
        assert simulate(graph, costs, workers, policy) == schedule


@settings(max_examples=300, deadline=None)
@given(plans(), st.integers(1, 6))
def test_list_schedules_meet_grahams_bound(plan, workers):
    graph, costs = plan
    total = math.fsum(costs.values())
    longest = max(bottom_levels(graph, costs).values(), default=0.0)
    bound = lower_bound(graph, costs, workers)
    # Greedy policies never idle a worker while a task is ready: Graham (1966).
    for policy in (CRITICAL_PATH_FIRST, FIFO_TOPOLOGICAL):
        makespan = simulate(graph, costs, workers, policy).makespan
        assert makespan <= total / workers + (1 - 1 / workers) * longest + EPS
        assert makespan <= (2 - 1 / workers) * bound + EPS


@settings(max_examples=100, deadline=None)
@given(plans())
def test_one_worker_does_all_the_work_and_enough_workers_follow_the_critical_path(plan):
    graph, costs = plan
    total = math.fsum(costs.values())
    longest = max(bottom_levels(graph, costs).values(), default=0.0)
    for policy in POLICIES:
        assert simulate(graph, costs, 1, policy).makespan == pytest.approx(total)
    many = max(graph.number_of_nodes(), 1)
    for policy in (CRITICAL_PATH_FIRST, FIFO_TOPOLOGICAL):
        assert simulate(graph, costs, many, policy).makespan == pytest.approx(longest)


# --- generated and real plans ----------------------------------------------------------------

def test_layered_dag_is_seeded_and_imports_only_lower_layers():
    graph = layered_dag(300, n_layers=8, seed=7)
    again = layered_dag(300, n_layers=8, seed=7)
    assert graph.number_of_nodes() == 300
    assert sorted(graph.edges) == sorted(again.edges)
    assert sorted(graph.edges) != sorted(layered_dag(300, n_layers=8, seed=8).edges)
    layer = nx.get_node_attributes(graph, "layer")
    assert all(layer[a] > layer[b] for a, b in graph.edges)
    # Every file imports one from the layer just below, so its layer is its depth.
    depth = {n: k for k, level in enumerate(topological_levels(graph)) for n in level}
    assert depth == layer
    assert len({layer[n] for n in graph}) == 8


def test_layered_dag_handles_tiny_plans():
    assert layered_dag(0, seed=1).number_of_nodes() == 0
    assert layered_dag(3, n_layers=10, seed=1).number_of_nodes() == 3


def test_lognormal_costs_are_seeded_and_positive():
    graph = layered_dag(200, seed=3)
    costs = lognormal_costs(graph, mu=0.0, sigma=1.0, seed=3)
    assert costs == lognormal_costs(graph, mu=0.0, sigma=1.0, seed=3)
    assert set(costs) == set(graph) and min(costs.values()) > 0
    median = sorted(costs.values())[100]
    assert 0.6 < median < 1.6


def test_generated_plans_schedule_validly():
    graph = layered_dag(400, seed=5)
    costs = lognormal_costs(graph, seed=5)
    for policy in POLICIES:
        assert_valid(graph, costs, simulate(graph, costs, 8, policy), 8)


@pytest.fixture
def tiny_package(tmp_path: Path) -> Path:
    """A package whose modules import their own package and each other in a cycle."""
    root = tmp_path / f"tinypkg_{uuid.uuid4().hex[:8]}"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("from . import core\n")
    (root / "core.py").write_text("X = 1\n" * 400)
    (root / "util.py").write_text(f"import {root.name}\nfrom . import helpers\n")
    (root / "helpers.py").write_text("from . import util\n")
    (root / "sub" / "__init__.py").write_text("")
    (root / "sub" / "leaf.py").write_text(f"from {root.name} import core\nimport {root.name}.sub\n")
    return root


def test_import_graph_costs_from_grimp_is_acyclic_and_sized(tiny_package: Path):
    graph, costs = import_graph_costs(tiny_package, floor_bytes=100, bytes_per_unit=10.0,
                                      source="grimp")
    assert graph.graph["source"] == "grimp"
    assert set(graph) == {"__init__.py", "core.py", "util.py", "helpers.py",
                          "sub/__init__.py", "sub/leaf.py"}
    assert nx.is_directed_acyclic_graph(graph)
    assert ("__init__.py", "core.py") in graph.edges
    assert ("sub/leaf.py", "core.py") in graph.edges
    dropped = set(graph.graph["dropped_edges"])
    # Imports of a file's own packages go, then one edge of the util <-> helpers cycle.
    assert {("util.py", "__init__.py"), ("sub/leaf.py", "sub/__init__.py")} <= dropped
    assert len(dropped & {("util.py", "helpers.py"), ("helpers.py", "util.py")}) == 1
    assert costs["core.py"] == pytest.approx(2400 / 10.0)
    assert costs["sub/__init__.py"] == pytest.approx(100 / 10.0)


def test_import_graph_costs_uses_the_analysis_when_it_is_there(tiny_package: Path):
    graph, costs = import_graph_costs(tiny_package)
    assert graph.graph["source"] == "analysis"
    assert nx.is_directed_acyclic_graph(graph)
    assert {"core.py", "util.py", "sub/leaf.py"} <= set(graph) == set(costs)
    assert ("sub/leaf.py", "core.py") in graph.edges


def test_import_graph_costs_refuses_what_is_not_a_package(tmp_path: Path):
    with pytest.raises(ConfigError):
        import_graph_costs(tmp_path / "missing", source="grimp")
    with pytest.raises(ConfigError):
        import_graph_costs(tmp_path, source="grimp")
