#!/usr/bin/env python3
"""Replay, verify and fork a 1,000-file plan's log (its own topic prefix on a real broker).

A layered plan (each file imports one of the layer before; a few fail once and are
retried) runs through `devline run` with zero-duration demo tasks and QA off. Then:

- replay: reading the plan's events from Kafka (its one partition), folding them in memory,
  and `--verify` re-deriving every decision, each timed on its own, plus the wall time of
  `devline replay PLAN --verify` as a process (interpreter start-up included);
- fork: `devline fork` at the midpoint of the log with the `python` executor (this
  script's `write`): planning and submitting it, then until the fork's PlanCompleted, with
  the executor calls counted (only the files after the fork point may run).

    .venv/bin/python scripts/bench_replay.py --files 1000 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench_pipeline import BenchError, run_plan, wait_until_ready

from agents.replay.state import replay
from agents.replay.verify import verify
from devline.launch import running
from devline.settings import Settings
from devline.supervisor import child_env
from streams.replay import fork, plan_events
from streams.topics import create_topics, delete_prefixed_topics

ROOT = Path(__file__).resolve().parents[1]
RUNS = "DEVLINE_BENCH_FORK_RUNS"


def write(item: Any) -> str:
    """The fork's executor: the plan's content, one journal line per call."""
    with open(os.environ[RUNS], "a") as f:
        f.write(json.dumps({"plan": item.plan_id, "task": item.task_id}) + "\n")
    return item.content if item.content is not None else f"# {item.path}\n"


def build(n: int, width: int, run: str) -> dict[str, Any]:
    files = []
    for i in range(n):
        layer, k = divmod(i, width)
        dep = f"from l{layer - 1}.m{(k * 7) % width:03d} import X\n" if layer else ""
        entry: dict[str, Any] = {"path": f"l{layer}/m{k:03d}.py",
                                 "content": f"# {run}\n{dep}X = {i}\n"}
        if i % 33 == 5:  # ~3%: a retry, so the log has failure decisions to verify
            entry["simulate"] = {"fail_first": 1}
        files.append(entry)
    return {"project": f"rb-{run}", "name": "replay bench", "options": {"qa": "off"},
            "files": files}


async def bench(settings: Settings, args: argparse.Namespace, runs: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    doc = build(args.files, args.width, uuid.uuid4().hex[:6])
    with running(settings, ["--workers", str(args.workers), "--test-workers", "0"],
                 args.scratch / "pipeline.log"):
        await asyncio.wait_for(wait_until_ready(settings, args.workers, 2.0), 180)
        events: list[Any] = []
        began = time.monotonic()
        await asyncio.wait_for(run_plan(settings, doc, events, 120), 1800)
        figures["source_run_s"] = time.monotonic() - began
        plan_id = events[0][2]["plan_id"]

        began = time.monotonic()
        log = await plan_events(settings, plan_id)
        figures["events"] = len(log)
        figures["read_s"] = time.monotonic() - began
        began = time.monotonic()
        state = replay(log)
        figures["replay_s"] = time.monotonic() - began
        assert state.state.header["done"] == args.files, state.state.header
        began = time.monotonic()
        verdict = verify(log, max_attempts=settings.max_attempts)
        figures["verify_s"] = time.monotonic() - began
        figures["verify_agree"] = verdict.agree
        figures["verify_checked"] = verdict.checked
        began = time.monotonic()
        cli = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "devline", "replay", plan_id, "--verify",
                             "--json"], env=child_env(settings), cwd=ROOT,
            capture_output=True, text=True, timeout=300)
        figures["cli_replay_verify_s"] = time.monotonic() - began
        assert cli.returncode == 0, cli.stderr

        at = len(log) // 2
        began = time.monotonic()
        plan, _ = await fork(settings, plan_id, at, executor="python", new_id=f"{plan_id}-f")
        figures["fork_submit_s"] = time.monotonic() - began
        figures["fork_kept"] = len(plan.journal["tasks"])
        figures["fork_to_run"] = len(plan.rerun)
        fork_events: list[Any] = []
        await asyncio.wait_for(_follow(settings, plan.plan_id, fork_events), 1800)
        figures["fork_total_s"] = time.monotonic() - began
        figures["fork_executor_calls"] = await asyncio.to_thread(_calls, runs, plan.plan_id)
        done = next(v for _, k, v in fork_events if k == "PlanCompleted")
        figures["fork_completed"] = {k: done[k] for k in ("files", "executor_runs",
                                                         "cache_hits")}
    return figures


def _calls(runs: Path, plan_id: str) -> int:
    if not runs.exists():
        return 0
    return sum(1 for line in runs.read_text().splitlines() if json.loads(line)["plan"] == plan_id)


async def _follow(settings: Settings, plan_id: str, out: list[Any]) -> None:
    from schemas.codec import Codec
    from streams import topics as T
    from streams.client import records

    codec = Codec.from_settings(settings)
    async for r in records(settings, T.EVENTS, follow=True):
        kind, value = codec.decode(r.value or b"")
        if value.get("plan_id") == plan_id:
            out.append((r, kind, value))
            if kind in ("PlanCompleted", "PlanRejected"):
                return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="files in the plan")
    parser.add_argument("--width", type=int, default=50, help="files per layer")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--bootstrap", default=os.environ.get("DEVLINE_BOOTSTRAP",
                                                              "127.0.0.1:9092"))
    args = parser.parse_args()
    args.scratch = Path(tempfile.mkdtemp(prefix="devline-bench-replay-"))
    runs = args.scratch / "fork-runs.jsonl"
    os.environ[RUNS] = str(runs)
    # The workers import this script's `write` as the python executor's entry point.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]).strip(":")
    config = args.scratch / "executors.json"
    config.write_text(json.dumps({"python": {"entrypoint": "bench_replay:write"}}))
    settings = Settings.from_env(bootstrap=args.bootstrap, executor_config=config,
                                 topic_prefix=f"bench-{uuid.uuid4().hex[:10]}.",
                                 workspace=args.scratch / "out", data_dir=args.scratch / "d")
    asyncio.run(create_topics(settings))
    print(f"prefix {settings.topic_prefix!r}, scratch {args.scratch}", flush=True)
    try:
        figures = asyncio.run(bench(settings, args, runs))
    except (BenchError, TimeoutError, AssertionError) as exc:
        print(f"no measurement: {exc!r} (pipeline log {args.scratch / 'pipeline.log'})",
              file=sys.stderr)
        return 1
    finally:
        asyncio.run(delete_prefixed_topics(settings))
    print(json.dumps(figures, indent=2, default=str))
    print(f"{args.files}-file plan: {figures['events']} events; read "
          f"{figures['read_s']:.2f}s, replay {figures['replay_s'] * 1000:.0f} ms, verify "
          f"{figures['verify_s'] * 1000:.0f} ms (agree: {figures['verify_agree']}); "
          f"`devline replay --verify` {figures['cli_replay_verify_s']:.2f}s wall")
    print(f"fork at the midpoint: planned and submitted in {figures['fork_submit_s']:.2f}s, "
          f"done {figures['fork_total_s']:.1f}s after; {figures['fork_kept']} files kept "
          f"(0 executor calls), {figures['fork_executor_calls']} executor calls for "
          f"{figures['fork_to_run']} to run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
