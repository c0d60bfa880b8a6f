#!/usr/bin/env python3
"""Compare scheduling policies by simulation: makespan over its lower bound.

For K seeded random layered plans (log-normal durations) and for the import graph of a real
package (durations proportional to file size), simulate every policy on W workers and print
makespan / lower bound, mean, p95 and max over the graphs. The lower bound is
max(critical path, total work / W), or with `--bound interval` the tighter interval bound
(`agents.scheduling.simulate.interval_lower_bound`).

The table is built from `Row`s: `simulate_suite` returns them and `print_table` prints them.
A run through the real Kafka broker can produce its own rows (suite "kafka: ...", one
`Row` per workers and policy) and hand them to `print_table` alongside these.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from agents.scheduling.dags import import_graph_costs, layered_dag, lognormal_costs
from agents.scheduling.priority import bottom_levels
from agents.scheduling.simulate import POLICIES, interval_lower_bound, lower_bound, simulate

Graph = tuple[nx.DiGraph, dict[str, float]]
Bound = Callable[[nx.DiGraph, Mapping[str, float], int], float]
BOUNDS: dict[str, Bound] = {"simple": lower_bound, "interval": interval_lower_bound}


@dataclass(frozen=True)
class Row:
    """One policy on one suite of graphs at one worker count: a ratio per graph."""

    suite: str
    workers: int
    policy: str
    ratios: tuple[float, ...]
    seconds: float

    @property
    def mean(self) -> float:
        return math.fsum(self.ratios) / len(self.ratios)

    @property
    def p95(self) -> float:
        return percentile(self.ratios, 95)

    @property
    def worst(self) -> float:
        return max(self.ratios)


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default method)."""
    ordered = sorted(values)
    position = pct / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def random_graphs(seeds: int, tasks: int, layers: int, fan_in: float, locality: float,
                  taper: float, sigma: float) -> list[Graph]:
    """`seeds` layered plans with log-normal durations, seeds 0 .. seeds - 1."""
    graphs = []
    for seed in range(seeds):
        graph = layered_dag(tasks, n_layers=layers, mean_fan_in=fan_in, locality=locality,
                            taper=taper, seed=seed)
        graphs.append((graph, lognormal_costs(graph, sigma=sigma, seed=seed)))
    return graphs


def simulate_suite(suite: str, graphs: Sequence[Graph], workers: Sequence[int],
                   policies: Sequence[str] = POLICIES, bound: Bound = lower_bound) -> list[Row]:
    """Simulate every policy on every graph at each worker count; one row per (W, policy)."""
    rows = []
    for w in workers:
        bounds = [bound(graph, costs, w) for graph, costs in graphs]
        for policy in policies:
            began = time.perf_counter()
            makespans = [simulate(graph, costs, w, policy).makespan for graph, costs in graphs]
            seconds = time.perf_counter() - began
            ratios = tuple(m / b if b else 1.0 for m, b in zip(makespans, bounds, strict=True))
            rows.append(Row(suite, w, policy, ratios, seconds))
    return rows


def describe(suite: str, graphs: Sequence[Graph]) -> str:
    """Size, depth and average parallelism (total work / critical path) of a suite."""
    nodes = [g.number_of_nodes() for g, _ in graphs]
    edges = [g.number_of_edges() for g, _ in graphs]
    depth = [nx.dag_longest_path_length(g) + 1 for g, _ in graphs]
    parallel = [math.fsum(c.values()) / max(bottom_levels(g, c).values()) for g, c in graphs]
    return (f"{suite}: {len(graphs)} graph(s), {_span(nodes)} tasks, {_span(edges)} edges, "
            f"depth {_span(depth)}, parallelism (work / critical path) {_span(parallel)}")


def print_table(rows: Sequence[Row]) -> None:
    """One line per (suite, W): mean, p95, max of makespan / bound per policy; sim seconds."""
    policies = list(dict.fromkeys(row.policy for row in rows))
    keys = list(dict.fromkeys((row.suite, row.workers) for row in rows))
    by_key = {(row.suite, row.workers, row.policy): row for row in rows}
    suite_width = max([len("suite")] + [len(suite) for suite, _ in keys])
    head = f"{'suite':<{suite_width}}  {'W':>3}"
    sub = " " * len(head)
    for policy in policies:
        head += f"  {policy:^20}"
        sub += f"  {'mean':>6} {'p95':>6} {'max':>6}"
    print(f"{head}  {'sim s':>7}")
    print(f"{sub}")
    for suite, w in keys:
        line = f"{suite:<{suite_width}}  {w:>3}"
        seconds = 0.0
        for policy in policies:
            row = by_key.get((suite, w, policy))
            line += (f"  {row.mean:>6.3f} {row.p95:>6.3f} {row.worst:>6.3f}" if row
                     else f"  {'-':>6} {'-':>6} {'-':>6}")
            seconds += row.seconds if row else 0.0
        print(f"{line}  {seconds:>7.3f}")


def _span(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    fmt = "{:.0f}" if all(float(v).is_integer() for v in values) else "{:.1f}"
    return fmt.format(low) if low == high else f"{fmt.format(low)}-{fmt.format(high)}"


def _workers(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("worker counts must be integers >= 1")
    return counts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="random plans (seeds 0..K-1)")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per random plan")
    parser.add_argument("--workers", type=_workers, default=[2, 4, 8, 16],
                        help="comma-separated worker counts")
    parser.add_argument("--package", type=Path, default=Path(nx.__file__).parent,
                        help="package directory whose import graph to schedule")
    parser.add_argument("--no-package", action="store_true", help="skip the real package")
    parser.add_argument("--bound", choices=sorted(BOUNDS), default="simple",
                        help="lower bound to divide by: max(critical path, work / W), or the "
                             "tighter interval bound")
    shape = parser.add_argument_group("random plan shape")
    shape.add_argument("--layers", type=int, default=12, help="layers per plan")
    shape.add_argument("--fan-in", type=float, default=3.0, help="mean imports per file")
    shape.add_argument("--locality", type=float, default=0.5,
                       help="chance an extra import comes from the layer just below")
    shape.add_argument("--taper", type=float, default=0.85,
                       help="layer k holds a share proportional to taper**k")
    shape.add_argument("--sigma", type=float, default=1.0, help="log-normal duration sigma")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    suites: list[tuple[str, list[Graph]]] = [(
        f"random layered ({args.seeds} seeds)",
        random_graphs(args.seeds, args.tasks, args.layers, args.fan_in, args.locality,
                      args.taper, args.sigma))]
    if not args.no_package:
        graph, costs = import_graph_costs(args.package)
        dropped = len(graph.graph["dropped_edges"])
        print(f"{args.package}: imports from {graph.graph['source']}, {dropped} edges dropped "
              "to break cycles (mostly submodules importing their own package)")
        suites.append((f"{args.package.name} (import graph)", [(graph, costs)]))
    rows: list[Row] = []
    for suite, graphs in suites:
        print(describe(suite, graphs))
        rows += simulate_suite(suite, graphs, args.workers, bound=BOUNDS[args.bound])
    print(f"\nmakespan / {args.bound} lower bound")
    print_table(rows)


if __name__ == "__main__":
    main()
