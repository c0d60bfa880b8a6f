#!/usr/bin/env python3
"""Run one seeded plan through the real broker and compare it with its simulated makespan.

A random layered plan (`layered_dag`, log-normal durations scaled so that critical-path-first
on W workers takes about --seconds) runs through `devline run --workers W` with the demo
executor: every file sleeps its `simulate.duration_s` and writes a stub, and its `cost` is
that duration, so the pipeline's priorities (bottom levels) use the true durations. The
pipeline gets its own uuid topic prefix; the plan is submitted once every worker has
registered and the work partitions have settled (unless --cold-start), then the event log
is read back and set beside the simulation of the same plan:

- makespan: first dispatch -> last completion, and PlanAccepted -> PlanCompleted;
- makespan / lower bound, lower bound = max(critical path, total work / W);
- dispatch latency: a task's start minus the last finish of its dependencies (this holds
  queueing for a free worker too); root start latency from PlanAccepted;
- handoff gap: start minus max(dependencies done, its worker's previous finish), i.e. time
  a task was ready *and* its worker free, split into processor and worker sides;
- per-task overhead: start minus dispatch, also split by whether the work went to the same
  partition as the worker's previous task (a fetch long poll may not cover that one);
- worker utilisation: busy time / (W x makespan), and where the rest of the time went.

    .venv/bin/python scripts/bench_pipeline.py --workers 4 --tasks 200 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
from bench_schedule import Row, percentile, print_table, simulate_suite

from agents.planning import plan_record
from agents.scheduling.dags import layered_dag, lognormal_costs
from agents.scheduling.priority import bottom_levels
from agents.scheduling.simulate import CRITICAL_PATH_FIRST, POLICIES, lower_bound, simulate
from devline.launch import running
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import produce, records
from streams.topics import create_topics, delete_prefixed_topics

ROOT = Path(__file__).resolve().parents[1]
Event = tuple[Any, str, dict[str, Any]]  # (raw record, event type, value)
READY_TIMEOUT = 120.0  # s for `devline run` to bring up its workers


class BenchError(RuntimeError):
    """The run could not be measured: workers never settled, or the plan failed or stalled."""


# -- the plan -------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchPlan:
    graph: nx.DiGraph          # a -> b: a depends on b
    durations: dict[str, float]  # seconds, by node
    plan: dict[str, Any]       # the plan document to submit

    def path(self, node: str) -> str:
        return f"bench/{node}.py"


def build_plan(tasks: int, layers: int, fan_in: float, sigma: float, seconds: float,
               workers: int, seed: int) -> BenchPlan:
    """A seeded layered plan whose CP-first simulation on `workers` lasts about `seconds`."""
    graph = layered_dag(tasks, n_layers=layers, mean_fan_in=fan_in, seed=seed)
    raw = lognormal_costs(graph, sigma=sigma, seed=seed)
    scale = seconds / simulate(graph, raw, workers, CRITICAL_PATH_FIRST).makespan
    # Millisecond durations: the plan carries exactly what the simulation uses.
    durations = {node: round(raw[node] * scale, 3) for node in graph}
    bench = BenchPlan(graph, durations, {})
    files = [{"path": bench.path(node),
              "depends_on": [bench.path(dep) for dep in sorted(graph.successors(node))],
              "cost": durations[node], "simulate": {"duration_s": durations[node]}}
             for node in sorted(graph)]
    plan = {"project": "bench", "name": f"bench-pipeline seed {seed}", "files": files}
    return BenchPlan(graph, durations, plan)


# -- the pipeline ---------------------------------------------------------------------
def running_pipeline(settings: Settings, workers: int, log: Path) -> Any:
    """`devline run --workers W` in its own process group; SIGTERM (then SIGKILL) on exit."""
    return running(settings, ["--workers", str(workers), "--no-create-topics"], log)


async def wait_until_ready(settings: Settings, workers: int, settle: float) -> float:
    """Wait until W workers own disjoint partitions covering the work topic, the scheduler
    counts W workers, and neither has changed for `settle` seconds; return seconds waited."""
    codec = Codec.from_settings(settings)
    beats: dict[str, dict[str, Any]] = {}
    seen = {"workers": -1.0}

    async def follow(topic: str) -> None:
        async for r in records(settings, topic, follow=True):
            with contextlib.suppress(Exception):
                kind, value = codec.decode(r.value or b"")
                if kind == "WorkerHeartbeat":
                    beats[value["worker_id"]] = value
                elif kind == "MetricPoint" and value["source"] == "scheduler" \
                        and value["name"] == "workers":
                    seen["workers"] = value["value"]

    def snapshot() -> tuple[Any, ...] | None:
        live = {w: b for w, b in beats.items() if b["state"] in ("idle", "busy")}
        owned = [p for b in live.values() for p in b["partitions"]]
        if (len(live) != workers or len(owned) != len(set(owned))
                or set(owned) != set(range(settings.work_partitions))
                or seen["workers"] != workers):
            return None
        return tuple(sorted((w, tuple(b["partitions"])) for w, b in live.items()))

    followers = [asyncio.create_task(follow(t)) for t in (T.WORKERS, T.METRICS)]
    began = time.monotonic()
    last, since = None, began
    try:
        while True:
            await asyncio.sleep(0.2)
            for f in followers:
                if f.done():
                    f.result()  # surface a broken follower
            now_state = snapshot()
            if now_state != last:
                last, since = now_state, time.monotonic()
            elif now_state is not None and time.monotonic() - since >= settle:
                return time.monotonic() - began
    finally:
        for f in followers:
            f.cancel()
        await asyncio.gather(*followers, return_exceptions=True)


async def run_plan(settings: Settings, plan: dict[str, Any], out: list[Event],
                   quiet: float) -> None:
    """Submit the plan and follow the event log into `out` until the plan completes;
    raise `BenchError` if it is rejected or none of its events arrives for `quiet` s."""
    record = plan_record(plan)
    plan_id = record["plan_id"]
    await produce(settings, T.PLANS, "PlanSubmitted", record, key=plan_id)
    codec = Codec.from_settings(settings)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(quiet) as silence:
            async for r in records(settings, T.EVENTS, follow=True):
                try:
                    kind, value = codec.decode(r.value or b"")
                except Exception:  # noqa: S112 - not ours to judge here
                    continue
                if value.get("plan_id") != plan_id:
                    continue
                out.append((r, kind, value))
                silence.reschedule(loop.time() + quiet)
                if kind == "PlanRejected":
                    raise BenchError(f"plan rejected: {value['reason']}")
                if kind == "PlanCompleted":
                    return
    except TimeoutError:
        done = sum(1 for _, k, _ in out if k == "TaskCompleted")
        raise BenchError(f"plan stalled: no event for {quiet:.0f}s after {done} completions"
                         ) from None


async def measure(settings: Settings, bench: BenchPlan, workers: int, settle: float | None,
                  limit: float) -> tuple[float | None, list[Event]]:
    """Wait for the workers (unless `settle` is None), run the plan; (seconds waited, events)."""
    ready_s = None
    if settle is not None:
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                ready_s = await wait_until_ready(settings, workers, settle)
        except TimeoutError:
            raise BenchError(f"{workers} workers did not register and settle within "
                             f"{READY_TIMEOUT:.0f}s") from None
    events: list[Event] = []
    began = time.monotonic()
    quiet = max(30.0, 3 * max(bench.durations.values()) + 10)
    try:
        async with asyncio.timeout(limit):
            await run_plan(settings, bench.plan, events, quiet)
    except TimeoutError:
        done = sum(1 for _, k, _ in events if k == "TaskCompleted")
        raise BenchError(f"plan not complete after {limit:.0f}s ({done} of "
                         f"{bench.graph.number_of_nodes()} tasks done)") from None
    print(f"plan completed {time.monotonic() - began:.1f}s after submission")
    return ready_s, sorted(events, key=lambda e: (e[0].partition, e[0].offset))


async def delete_topics(settings: Settings) -> int:
    """Delete every topic under this run's (uuid) prefix, Faust's changelogs included."""
    return await delete_prefixed_topics(settings)


# -- the figures ----------------------------------------------------------------------
@dataclass(frozen=True)
class Figures:
    makespan: float            # s, first dispatch -> last completion
    accepted_makespan: float   # s, PlanAccepted -> PlanCompleted (its makespan_ms)
    samples: dict[str, list[float]]  # ms, per latency kind
    busy: float                # s, sum of started -> finished
    slept: float               # s, sum of simulated durations
    idle: dict[str, float]     # s of worker time by cause; with `busy` sums to W x makespan
    redelivered: int           # completions beyond the first per task
    failed: int                # TaskFailed events


def analyse(events: Sequence[Event], bench: BenchPlan) -> Figures:
    """Makespans and latency samples from one plan's events."""
    accepted = next(v for _, k, v in events if k == "PlanAccepted")
    completed = next(v for _, k, v in events if k == "PlanCompleted")
    deps = {t["task_id"]: list(t["depends_on"]) for t in accepted["tasks"]}
    sleep = {bench.path(n): d for n, d in bench.durations.items()}
    dispatched: dict[str, int] = {}
    partition: dict[str, int] = {}  # of the work topic, for the first dispatch
    done: dict[str, dict[str, Any]] = {}
    redelivered = failed = 0
    for _, kind, v in events:
        if kind == "TaskDispatched":
            dispatched.setdefault(v["task_id"], v["dispatched_at"])
            partition.setdefault(v["task_id"], v["partition"])
        elif kind == "TaskCompleted":
            if v["task_id"] in done:
                redelivered += 1
            else:
                done[v["task_id"]] = v
        elif kind == "TaskFailed":
            failed += 1
    missing = set(deps) - set(done)
    if missing:
        raise BenchError(f"{len(missing)} tasks never completed, e.g. {sorted(missing)[:3]}")
    start = {t: v["started_at"] for t, v in done.items()}
    finish = {t: v["finished_at"] for t, v in done.items()}
    ready = {t: max((finish[d] for d in ds), default=accepted["accepted_at"])
             for t, ds in deps.items()}
    # The task each worker ran just before this one (slots=1 per worker), and its finish.
    last_task: dict[str, str] = {}
    for tasks in _by_worker(done).values():
        last_task.update((after, before) for before, after in itertools.pairwise(tasks))
    previous = {t: finish[before] for t, before in last_task.items()}
    samples: dict[str, list[float]] = {name: [] for name in (
        "dispatch latency (deps done -> start)", "root start (accepted -> start)",
        "handoff gap (ready & worker free -> start)", "  processor side (-> dispatch)",
        "  per-task overhead (dispatch -> start)", "    on the worker's last partition",
        "    on another partition", "executor overhead (run - sleep)")}
    names = list(samples)
    for task, ds in deps.items():
        free_at = max(ready[task], previous.get(task, ready[task]))
        samples[names[0] if ds else names[1]].append(start[task] - ready[task])
        samples[names[2]].append(start[task] - free_at)
        samples[names[3]].append(dispatched[task] - free_at)
        samples[names[4]].append(start[task] - dispatched[task])
        if task in previous:
            same = partition[task] == partition[last_task[task]]
            samples[names[5] if same else names[6]].append(start[task] - dispatched[task])
        samples[names[7]].append(finish[task] - start[task] - 1000 * sleep[task])
    first_dispatch = min(dispatched.values())
    return Figures(
        makespan=(max(finish.values()) - first_dispatch) / 1000,
        accepted_makespan=completed["makespan_ms"] / 1000,
        samples=samples,
        busy=math.fsum(finish[t] - start[t] for t in done) / 1000,
        slept=math.fsum(sleep.values()),
        idle=_idle(_by_worker(done), start, finish, ready, first_dispatch),
        redelivered=redelivered, failed=failed)


def _idle(by_worker: Mapping[str, list[str]], start: Mapping[str, int],
          finish: Mapping[str, int], ready: Mapping[str, int], first: int) -> dict[str, float]:
    """Worker time not spent running a task, in s: before its first task, between tasks
    while the next one was ready (handoff) or not yet ready (starved), after its last."""
    end = max(finish.values())
    idle = dict.fromkeys(("head", "handoff", "starved", "tail"), 0.0)
    for tasks in by_worker.values():
        idle["head"] += start[tasks[0]] - first
        idle["tail"] += end - finish[tasks[-1]]
        for before, after in itertools.pairwise(tasks):
            waited = max(ready[after] - finish[before], 0)
            idle["starved"] += waited
            idle["handoff"] += start[after] - finish[before] - waited
    return {cause: ms / 1000 for cause, ms in idle.items()}


def _by_worker(done: Mapping[str, dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for task, v in sorted(done.items(), key=lambda kv: kv[1]["started_at"]):
        out.setdefault(v["worker_id"], []).append(task)
    return out


def simulated_waits(bench: BenchPlan, workers: int) -> list[float]:
    """Dependencies done -> start, in ms, of the same tasks in the CP-first simulation."""
    sched = simulate(bench.graph, bench.durations, workers, CRITICAL_PATH_FIRST)
    return [1000 * (sched.start[n] - max(sched.finish[d] for d in bench.graph.successors(n)))
            for n in bench.graph if bench.graph.out_degree(n)]


# -- printing -------------------------------------------------------------------------
def print_report(bench: BenchPlan, fig: Figures, workers: int, ready_s: float | None) -> None:
    graph, costs = bench.graph, bench.durations
    bound = lower_bound(graph, costs, workers)
    cp = max(bottom_levels(graph, costs).values())
    work = math.fsum(costs.values())
    sims = {p: simulate(graph, costs, workers, p).makespan for p in POLICIES}
    print(f"plan: {graph.number_of_nodes()} tasks, {graph.number_of_edges()} edges, depth "
          f"{nx.dag_longest_path_length(graph) + 1}, work {work:.1f}s, critical path {cp:.1f}s, "
          f"W={workers}: lower bound max(CP, work/W) = {bound:.2f}s")
    if ready_s is not None:
        print(f"workers registered and partitions settled {ready_s:.1f}s after `devline run`")
    print(f"\n{'':<38}{'makespan s':>11}{'/ LB':>8}{'work/(W*span)':>15}")
    rows = [(f"simulated {CRITICAL_PATH_FIRST}", sims[CRITICAL_PATH_FIRST]),
            ("Kafka run, first dispatch -> last done", fig.makespan),
            ("Kafka run, PlanAccepted -> Completed", fig.accepted_makespan),
            *((f"  (reference) simulated {p}", sims[p]) for p in POLICIES
              if p != CRITICAL_PATH_FIRST)]
    for name, span in rows:
        print(f"{name:<38}{span:>11.2f}{span / bound:>8.3f}{work / (workers * span):>14.1%}")
    total = workers * fig.makespan
    print(f"\nKafka run: workers busy {fig.busy:.1f}s of {workers} x {fig.makespan:.2f}s = "
          f"{total:.1f}s ({fig.busy / total:.1%}); {fig.redelivered} redelivered, "
          f"{fig.failed} failed attempts")
    print(f"  worker time: sleeping {fig.slept:.1f}s, executor overhead "
          f"{fig.busy - fig.slept:.1f}s, idle "
          + ", ".join(f"{cause} {s:.1f}s" for cause, s in fig.idle.items())
          + f" (unaccounted {total - fig.busy - math.fsum(fig.idle.values()):.1f}s)")
    sim = simulate(graph, costs, workers, CRITICAL_PATH_FIRST)
    print(f"  simulated: {workers} x {sim.makespan:.2f}s = {workers * sim.makespan:.1f}s, "
          f"sleeping {work:.1f}s, idle {workers * sim.makespan - work:.1f}s")
    print(f"\n{'latency, ms':<44}{'n':>5}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
    named = [*fig.samples.items(),
             ("simulated CP-first: deps done -> start", simulated_waits(bench, workers))]
    for name, values in named:
        if values:
            print(f"{name:<44}{len(values):>5}" + "".join(
                f"{percentile(values, q):>9.1f}" for q in (50, 95, 99)) + f"{max(values):>9.1f}")
    suite = f"seed plan ({graph.number_of_nodes()} tasks)"
    table = simulate_suite(f"sim: {suite}", [(graph, costs)], [workers])
    table.append(Row(f"kafka: {suite}", workers, CRITICAL_PATH_FIRST,
                     (fig.makespan / bound,), fig.makespan))
    print("\nmakespan / simple lower bound (bench_schedule table; 'sim s' is wall time)")
    print_table(table)


# -- command line ---------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workers", type=int, default=4, help="worker processes (W)")
    parser.add_argument("--tasks", type=int, default=200, help="files in the plan")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="target simulated CP-first makespan on W workers")
    parser.add_argument("--seed", type=int, default=0, help="plan and duration seed")
    parser.add_argument("--layers", type=int, default=12, help="layers of the plan")
    parser.add_argument("--fan-in", type=float, default=3.0, help="mean imports per file")
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal duration sigma")
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap servers [env: DEVLINE_BOOTSTRAP; default "
                             "127.0.0.1:9092]")
    parser.add_argument("--cold-start", action="store_true",
                        help="submit right after `devline run` starts, without waiting for "
                             "the workers to register")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds the worker/partition assignment must stay unchanged")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for the plan [default: 5 x --seconds + 120]")
    parser.add_argument("--log", type=Path, default=None,
                        help="file for the pipeline's output [default: a temporary file]")
    parser.add_argument("--keep-topics", action="store_true",
                        help="leave this run's uuid-prefixed topics on the broker")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.workers < 1 or args.tasks < 1 or args.seconds <= 0:
        raise SystemExit("need --workers >= 1, --tasks >= 1 and --seconds > 0")
    bench = build_plan(args.tasks, args.layers, args.fan_in, args.sigma, args.seconds,
                       args.workers, args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="devline-bench-"))
    settings = Settings.from_env(bootstrap=args.bootstrap,
                                 topic_prefix=f"bench-{uuid.uuid4().hex[:10]}.",
                                 workspace=scratch / "out", data_dir=scratch / "data")
    log = args.log or scratch / "pipeline.log"
    limit = args.timeout or 5 * args.seconds + 120
    asyncio.run(create_topics(settings))
    print(f"topics under prefix {settings.topic_prefix!r}; pipeline log {log}")
    try:
        with running_pipeline(settings, args.workers, log):
            ready_s, events = asyncio.run(measure(
                settings, bench, args.workers, None if args.cold_start else args.settle,
                limit))
        print_report(bench, analyse(events, bench), args.workers, ready_s)
    except BenchError as exc:
        print(f"\nno measurement: {exc}", file=sys.stderr)
        errors = log_errors(log)
        if errors:
            print(f"first errors in the pipeline log {log}:", file=sys.stderr)
            print("\n".join(f"  {line}" for line in errors), file=sys.stderr)
        return 1
    finally:
        if not args.keep_topics:
            asyncio.run(delete_topics(settings))
    return 0


def log_errors(log: Path, limit: int = 5) -> list[str]:
    """The first distinct ERROR lines of the pipeline's output, timestamps dropped."""
    seen: dict[str, None] = {}
    with contextlib.suppress(OSError), open(log, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if " ERROR " in line:
                seen.setdefault(line.split(" ERROR ", 1)[1].strip()[:300])
    return list(seen)[:limit]


if __name__ == "__main__":
    sys.exit(main())
