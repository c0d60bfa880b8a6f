#!/usr/bin/env python3
"""Sharded integration tests: 1 worker vs K parallel shards on a generated sleep suite.

Generates N sleep-based pytest tests with seeded, varied durations (most 0.05-0.3 s, about
one in twenty 1-2 s) in a temporary directory, then in one run:

1. runs them all in one shard (1 worker) with `run_shard` and records each test's duration
   from its JUnit report;
2. plans K shards from those durations with `plan_shards` (LPT) and runs them concurrently
   (`asyncio.gather` over `run_shard`);
3. does the same with naive round-robin shards, for comparison.

It prints the test time, the ideal K-worker wall time max(total/K, longest), each run's wall
time, its ratio to the ideal and its speedup over 1 worker, and each shard's overhead (wall
time minus its tests' time: mostly pytest's start-up and collection). Sleeping needs no
CPU, so K shards on fewer cores still overlap; start-up does compete for the cores.
`--no-autoload` sets PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 in the shards (this suite needs no
plugin) to show how much of that start-up is the environment's installed pytest plugins.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.integration import (
    Shard,
    ShardRun,
    discover_tests,
    ideal_makespan,
    plan_shards,
    round_robin_shards,
    run_shard,
)

TESTS_PER_FILE = 20
LONG_SHARE = 0.05
RATIO_BAR = 1.15
SPEEDUP_BAR = 2.5


@dataclass(frozen=True)
class Result:
    """One way of running the suite: its shards, their runs and the wall time of all."""

    name: str
    shards: tuple[Shard, ...]
    runs: tuple[ShardRun, ...]
    wall_s: float

    @property
    def failures(self) -> int:
        return sum(o.status != "passed" for r in self.runs for o in r.outcomes)

    def overheads(self) -> list[float]:
        return [r.duration_s - math.fsum(o.duration_s for o in r.outcomes) for r in self.runs]


def planted_durations(count: int, seed: int) -> list[float]:
    """Seeded durations: mostly 0.05-0.3 s, about one in twenty 1-2 s."""
    rng = random.Random(seed)
    return [round(rng.uniform(1.0, 2.0) if rng.random() < LONG_SHARE
                  else rng.uniform(0.05, 0.3), 3) for _ in range(count)]


def write_suite(root: Path, durations: Sequence[float]) -> list[str]:
    """One sleeping test per duration, TESTS_PER_FILE to a file; return the file paths."""
    files = []
    for start in range(0, len(durations), TESTS_PER_FILE):
        relpath = f"tests/test_sleep_{start // TESTS_PER_FILE:03d}.py"
        lines = ["import time\n"]
        for i, seconds in enumerate(durations[start:start + TESTS_PER_FILE], start):
            lines.append(f"\ndef test_sleep_{i:04d}():\n    time.sleep({seconds})\n")
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines))
        files.append(relpath)
    return files


async def run_shards(name: str, root: Path, shards: Sequence[Shard], timeout_s: float,
                     env: dict[str, str]) -> Result:
    started = time.monotonic()
    runs = await asyncio.gather(*(run_shard(root, s.tests, timeout_s=timeout_s, env=env)
                                  for s in shards))
    return Result(name, tuple(shards), tuple(runs), time.monotonic() - started)


async def bench(root: Path, count: int, workers: int, seed: int,
                autoload: bool = True) -> list[str]:
    planted = planted_durations(count, seed)
    files = write_suite(root, planted)
    tests = discover_tests(root, files)
    timeout = max(600.0, 3 * sum(planted))
    env = {} if autoload else {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    print(f"suite: {len(tests)} tests in {len(files)} files (seed {seed}); planted "
          f"{sum(planted):.1f} s in all, longest {max(planted):.2f} s; "
          f"{workers} workers, python {sys.version.split()[0]}, "
          f"plugin autoload {'on' if autoload else 'off'}")

    single = await run_shards("1 worker", root, [Shard(0, tuple(tests), sum(planted))], timeout,
                              env)
    recorded = {o.test_id: o.duration_s for o in single.runs[0].outcomes}
    total = math.fsum(recorded.values())
    ideal = ideal_makespan(recorded.values(), workers)
    print(f"recorded from JUnit: test time {total:.2f} s, longest "
          f"{max(recorded.values()):.2f} s; ideal {workers}-worker wall "
          f"max(total/{workers}, longest) = {ideal:.2f} s\n")

    lpt = await run_shards(f"{workers} workers, LPT", root,
                           plan_shards(tests, recorded, workers), timeout, env)
    naive = await run_shards(f"{workers} workers, round-robin", root,
                             round_robin_shards(tests, recorded, workers), timeout, env)

    print(f"{'run':<26}{'shards':>7}{'expected s':>12}{'wall s':>9}{'/ideal':>8}"
          f"{'speedup':>9}{'overhead/shard s':>20}{'not passed':>12}")
    for result in (single, lpt, naive):
        expected = max(s.expected_s for s in result.shards)
        overheads = result.overheads()
        ratio = "" if len(result.shards) == 1 else f"{result.wall_s / ideal:.2f}x"
        spread = f"{min(overheads):.2f}-{max(overheads):.2f}"
        print(f"{result.name:<26}{len(result.shards):>7}{expected:>12.2f}{result.wall_s:>9.2f}"
              f"{ratio:>8}{single.wall_s / result.wall_s:>8.2f}x{spread:>20}"
              f"{result.failures:>12}")

    verdicts = [
        f"LPT wall / ideal {lpt.wall_s / ideal:.2f}x (bar <= {RATIO_BAR}x): "
        + ("ok" if lpt.wall_s / ideal <= RATIO_BAR else "MISSED"),
        f"speedup over 1 worker {single.wall_s / lpt.wall_s:.2f}x (bar >= {SPEEDUP_BAR}x): "
        + ("ok" if single.wall_s / lpt.wall_s >= SPEEDUP_BAR else "MISSED"),
        f"LPT vs round-robin wall: {lpt.wall_s:.2f} s vs {naive.wall_s:.2f} s",
    ]
    print("\n" + "\n".join(verdicts))
    return verdicts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tests", type=int, default=200, metavar="N",
                        help="sleeping tests to generate (default 200)")
    parser.add_argument("--workers", type=int, default=4, metavar="K",
                        help="parallel shards (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="durations seed (default 1)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="write the suite into DIR and keep it (default: a temp dir)")
    parser.add_argument("--no-autoload", action="store_true",
                        help="shards run with PYTEST_DISABLE_PLUGIN_AUTOLOAD=1")
    args = parser.parse_args(argv)
    if args.tests < 1 or args.workers < 1:
        parser.error("--tests and --workers must be >= 1")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        asyncio.run(bench(args.keep.resolve(), args.tests, args.workers, args.seed,
                          not args.no_autoload))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        asyncio.run(bench(Path(tmp), args.tests, args.workers, args.seed,
                          not args.no_autoload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
