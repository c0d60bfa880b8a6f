#!/usr/bin/env python3
"""Integration tests sharded over test workers through the real pipeline: 1 vs W workers.

`scripts/bench_shards.py` measures the library (`plan_shards` + `run_shard`) alone; this
runs the same kind of seeded sleep suite through `devline run` against a broker, where the
processor balances it over `--test-workers` shards and test workers run them:

- the plan: `pkg/core.py` and --modules pytest modules `tests/test_mNN.py` (each imports and
  `depends_on` core) whose --tests tests `time.sleep` seeded durations (most 0.05-0.3 s,
  about one in twenty 1-2 s); demo executor, `qa: syntax` (per-file checks only parse, so
  the tests run in the integration stage only);
- for W in (1, --workers): fresh uuid-prefixed topics, `devline run --workers 2
  --test-workers W`; the plan is submitted once (warm-up: the project records every test's
  duration), then again as a new plan of the same project (another name, another comment in
  core); that second run is measured from its `IntegrationStarted.at` to the last
  `IntegrationResult.at` of round 1, and must have W shards, each run by a different test
  worker, and no failure;
- printed side by side: test time and longest test (from the recorded durations), the ideal
  max(total/W, longest), the integration wall time and its ratio to the ideal, the speedup
  over 1 worker, per shard the expected seconds vs its `duration_ms` and its overhead
  (duration minus its tests' time: mostly pytest's start-up), and each plan's makespan.

    .venv/bin/python scripts/bench_integration.py --workers 4 --tests 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench_pipeline import BenchError as PipelineBenchError
from bench_pipeline import run_plan as follow_plan
from bench_shards import planted_durations

from devline.launch import running
from devline.settings import Settings
from streams.topics import create_topics, delete_prefixed_topics

RATIO_BAR = 1.15
SPEEDUP_BAR = 2.5
PROJECT = "benchinteg"
Event = tuple[Any, str, dict[str, Any]]  # (raw record, event type, value)


class BenchError(RuntimeError):
    """The run could not be measured: the plan was rejected, stalled or its tests failed."""


# -- the plan -------------------------------------------------------------------------
def suite_sources(durations: Sequence[float], modules: int) -> dict[str, str]:
    """The test modules: the durations split into `modules` contiguous runs of tests."""
    per = math.ceil(len(durations) / modules)
    sources = {}
    for m in range(modules):
        chunk = durations[m * per:(m + 1) * per]
        if not chunk:
            break
        body = ["import time\n\nfrom pkg import core\n"]
        for i, seconds in enumerate(chunk, m * per):
            body.append(f"\n\ndef test_t{i:04d}():\n    time.sleep({seconds})\n"
                        "    assert core.ready()\n")
        sources[f"tests/test_m{m:02d}.py"] = "".join(body)
    return sources


def build_plan(tests: dict[str, str], name: str) -> dict[str, Any]:
    """The plan document; `name` is also in core's comment, so each name is a new plan id."""
    core = f'"""The module every test imports."""\n# plan: {name}\n\n\ndef ready():\n' \
           "    return True\n"

    def spec(path: str, content: str, depends: list[str]) -> dict[str, Any]:
        return {"path": path, "content": content, "depends_on": depends,
                "simulate": {"duration_s": 0}}

    return {"project": PROJECT, "name": name,
            "options": {"executor": "demo", "qa": "syntax"},
            "files": [spec("pkg/core.py", core, []),
                      *(spec(p, text, ["pkg/core.py"]) for p, text in tests.items())]}


# -- one pipeline run -----------------------------------------------------------------
async def run_plan(settings: Settings, plan: dict[str, Any], quiet: float) -> list[Event]:
    """Submit the plan, follow the event log until it completes; its events in log order."""
    out: list[Event] = []
    try:
        await follow_plan(settings, plan, out, quiet)
    except PipelineBenchError as exc:
        raise BenchError(f"plan {plan['name']}: {exc}") from None
    return sorted(out, key=lambda e: (e[0].partition, e[0].offset))


@dataclass(frozen=True)
class ShardFigures:
    index: int
    tests: int
    expected_s: float
    duration_s: float
    tests_s: float       # sum of its tests' recorded durations
    worker_id: str

    @property
    def overhead_s(self) -> float:
        return self.duration_s - self.tests_s


@dataclass(frozen=True)
class Case:
    workers: int
    shards: tuple[ShardFigures, ...]
    durations: dict[str, float]   # per test, as the testers recorded them
    wall_s: float                 # IntegrationStarted.at -> last IntegrationResult.at
    makespan_s: float             # PlanCompleted.makespan_ms (accepted -> completed)
    warm_makespan_s: float
    cache_hits: int
    files: int
    duplicates: int               # results beyond one per shard (redeliveries)

    @property
    def total_s(self) -> float:
        return math.fsum(self.durations.values())

    @property
    def longest_s(self) -> float:
        return max(self.durations.values(), default=0.0)

    @property
    def ideal_s(self) -> float:
        return max(self.total_s / self.workers, self.longest_s)


def analyse(events: Sequence[Event], workers: int, tests: int) -> tuple[Case, dict[str, Any]]:
    """Round 1 of the plan's integration run, checked; (figures without makespans, done)."""
    started = [v for _, k, v in events if k == "IntegrationStarted" and v["round"] == 1]
    done = [v for _, k, v in events if k == "PlanCompleted"]
    if not started or not done:
        raise BenchError("the measured plan has no integration round 1 or did not complete")
    run = started[0]
    first: dict[int, dict[str, Any]] = {}
    results = [v for _, k, v in events if k == "IntegrationResult" and v["run_id"] == run["run_id"]]
    for v in results:
        first.setdefault(v["shard"], v)
    problems = []
    if len(run["shards"]) != workers or sorted(first) != list(range(workers)):
        problems.append(f"{len(run['shards'])} shards planned, results for {sorted(first)}; "
                        f"wanted {workers}")
    if len({v["worker_id"] for v in first.values()}) != len(first):
        problems.append("a test worker ran more than one shard: "
                        + ", ".join(f"{s}:{v['worker_id']}" for s, v in sorted(first.items())))
    failed = [t for v in results for t in v["failed_tests"]]
    errors = [v["error"] for v in results if v["error"]]
    if failed or errors or not all(v["passed"] for v in first.values()):
        problems.append(f"failures {failed[:5]}, errors {errors[:2]}")
    durations = {t: d for v in first.values() for t, d in v["durations"].items()}
    if len(durations) != tests:
        problems.append(f"{len(durations)} test durations reported, {tests} tests planted")
    if problems:
        raise BenchError("; ".join(problems))
    planned = {s["index"]: s for s in run["shards"]}
    shards = tuple(ShardFigures(i, len(planned[i]["tests"]), planned[i]["expected_s"],
                                v["duration_ms"] / 1000, math.fsum(v["durations"].values()),
                                v["worker_id"]) for i, v in sorted(first.items()))
    wall = (max(v["at"] for v in first.values()) - run["at"]) / 1000
    case = Case(workers, shards, durations, wall, done[0]["makespan_ms"] / 1000, 0.0,
                done[0]["cache_hits"], done[0]["files"], len(results) - len(first))
    return case, done[0]


async def run_case(bootstrap: str, workers: int, durations: Sequence[float], modules: int,
                   scratch: Path) -> Case:
    """A fresh pipeline with W test workers: warm-up plan, then the measured one."""
    root = scratch / f"w{workers}"
    settings = Settings(bootstrap=bootstrap, topic_prefix=f"bi{uuid.uuid4().hex[:10]}.",
                        work_partitions=12, event_partitions=4,
                        workspace=root / "out", data_dir=root / "data")
    tests = suite_sources(durations, modules)
    quiet = max(120.0, 2 * math.fsum(durations) + 60)
    log = scratch / f"pipeline-w{workers}.log"
    await create_topics(settings)
    print(f"W={workers}: topics under {settings.topic_prefix!r}, log {log}", flush=True)
    try:
        with running(settings, ["--workers", "2", "--test-workers", str(workers)], log):
            began = time.monotonic()
            warm = await run_plan(settings, build_plan(tests, f"warm-up w{workers}"), quiet)
            warm_done = next(v for _, k, v in warm if k == "PlanCompleted")
            print(f"W={workers}: warm-up completed in {time.monotonic() - began:.1f} s",
                  flush=True)
            began = time.monotonic()
            measured = await run_plan(settings, build_plan(tests, f"measured w{workers}"),
                                      quiet)
            print(f"W={workers}: measured plan completed in {time.monotonic() - began:.1f} s",
                  flush=True)
        case, _ = analyse(measured, workers, len(durations))
        return replace(case, warm_makespan_s=warm_done["makespan_ms"] / 1000)
    finally:
        try:
            deleted = await delete_prefixed_topics(settings)
            print(f"W={workers}: deleted {deleted} topics", flush=True)
        except Exception as exc:  # clean-up only: the figures stand without it
            print(f"could not delete topics under {settings.topic_prefix}: {exc}")


# -- the report -----------------------------------------------------------------------
def print_report(one: Case, many: Case) -> list[str]:
    cases = (one, many)
    width = 14

    def row(label: str, values: Sequence[str]) -> None:
        print(f"{label:<46}" + "".join(f"{v:>{width}}" for v in values))

    print()
    row("", ["1 worker", f"{many.workers} workers"])
    row("test time (sum of recorded durations), s", [f"{c.total_s:.2f}" for c in cases])
    row("longest test, s", [f"{c.longest_s:.2f}" for c in cases])
    row("ideal max(total/W, longest), s", [f"{c.ideal_s:.2f}" for c in cases])
    row("integration wall (started -> last result), s", [f"{c.wall_s:.2f}" for c in cases])
    row("wall / ideal", [f"{c.wall_s / c.ideal_s:.3f}x" for c in cases])
    row("speedup over 1 worker", [f"{one.wall_s / c.wall_s:.2f}x" for c in cases])
    row("pytest overhead per shard (mean), s",
        [f"{sum(s.overhead_s for s in c.shards) / len(c.shards):.2f}" for c in cases])
    row("measured plan makespan (accepted->completed), s",
        [f"{c.makespan_s:.2f}" for c in cases])
    row("warm-up plan makespan, s", [f"{c.warm_makespan_s:.2f}" for c in cases])
    row("measured plan: cache hits / files", [f"{c.cache_hits}/{c.files}" for c in cases])
    row("redelivered shard results", [str(c.duplicates) for c in cases])

    print(f"\n{'W':>3}{'shard':>7}{'tests':>7}{'expected s':>12}{'duration s':>12}"
          f"{'tests s':>10}{'overhead s':>12}  worker")
    for c in cases:
        for s in c.shards:
            print(f"{c.workers:>3}{s.index:>7}{s.tests:>7}{s.expected_s:>12.2f}"
                  f"{s.duration_s:>12.2f}{s.tests_s:>10.2f}{s.overhead_s:>12.2f}  {s.worker_id}")

    ratio, speedup = many.wall_s / many.ideal_s, one.wall_s / many.wall_s
    verdicts = [
        f"{many.workers}-worker wall / ideal {ratio:.3f}x (bar <= {RATIO_BAR}x): "
        + ("ok" if ratio <= RATIO_BAR else "MISSED"),
        f"speedup over 1 worker {speedup:.2f}x (bar >= {SPEEDUP_BAR}x): "
        + ("ok" if speedup >= SPEEDUP_BAR else "MISSED"),
    ]
    print("\n" + "\n".join(verdicts))
    return verdicts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092",
                        help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    parser.add_argument("--tests", type=int, default=200, metavar="N",
                        help="sleeping tests in the suite (default 200)")
    parser.add_argument("--modules", type=int, default=10, metavar="M",
                        help="test modules they are spread over (default 10)")
    parser.add_argument("--workers", type=int, default=4, metavar="W",
                        help="test workers of the parallel case, always compared with 1 "
                        "(default 4)")
    parser.add_argument("--seed", type=int, default=1, help="durations seed (default 1)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch dir (pipeline logs, workspaces)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.tests < 1 or args.modules < 1 or args.workers < 2:
        parser.error("need --tests >= 1, --modules >= 1 and --workers >= 2")
    # aiokafka's retried NotLeaderForPartition warnings on brand-new topics are noise here
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    durations = planted_durations(args.tests, args.seed)
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        print(f"load average before: {' '.join(f.read().split()[:3])}")
    print(f"suite: {args.tests} tests in {min(args.modules, args.tests)} modules (seed "
          f"{args.seed}), planted {sum(durations):.1f} s, longest {max(durations):.2f} s; "
          f"1 vs {args.workers} test workers; python {sys.version.split()[0]}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="devline-bench-integ-"))
    try:
        cases = [asyncio.run(run_case(args.bootstrap, w, durations, args.modules, scratch))
                 for w in (1, args.workers)]
        print_report(*cases)
        with contextlib.suppress(OSError), open("/proc/loadavg") as f:
            print(f"load average after: {' '.join(f.read().split()[:3])}")
    except BenchError as exc:
        print(f"\nno measurement: {exc} (logs in {scratch})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
