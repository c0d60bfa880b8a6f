#!/usr/bin/env python3
"""Chaos run: SIGKILL a worker in the middle of a task and count what the log says.

On a fresh topic prefix this starts `devline run --workers N`, submits a layered plan of
`--tasks` files (each imports one or two files of the layer before; small durations, every
tenth task longer so that a kill lands mid-task), waits until `--kill-after` of the plan is
done, then SIGKILLs the worker process that was most recently handed a long task. The
supervisor restarts it. When the plan completes, the event log is folded into:

  lost         tasks that never completed
  duplicated   tasks with more than one non-cached TaskCompleted
  redelivered  work items processed more than once: more than one TaskCompleted/TaskFailed
               for one dispatch_id, or for one (task, attempt)

Worker processes are found in /proc: `devline worker` command lines in the run's process
group (the run is started in its own session, so nothing else is ever signalled).

    .venv/bin/python scripts/chaos_kill.py --workers 4 --tasks 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer  # noqa: E402

from agents.planning import plan_record  # noqa: E402
from devline.errors import DecodeError  # noqa: E402
from devline.settings import Settings  # noqa: E402
from devline.supervisor import child_env  # noqa: E402
from schemas.codec import Codec  # noqa: E402
from streams import topics as T  # noqa: E402
from streams.client import _partitions, produce  # noqa: E402
from streams.topics import create_topics, delete_prefixed_topics  # noqa: E402

LONG_EVERY = 10  # every tenth task runs longer, so a kill can land mid-task


def layered_plan(n: int, width: int, duration: float, long: float, seed: int) -> dict[str, Any]:
    """`n` Python files in layers of `width`; each imports one or two of the layer before."""
    rng = random.Random(seed)
    files = []
    for i in range(n):
        layer = i // width
        prev = list(range((layer - 1) * width, layer * width)) if layer else []
        deps = sorted(rng.sample(prev, min(len(prev), rng.choice((1, 2)))))
        body = "".join(f"from m{d:04d} import X{d}\n" for d in deps)
        body += f"X{i} = {' + '.join(f'X{d}' for d in deps) or i}\n"
        files.append({"path": f"m{i:04d}.py", "content": body,
                      "simulate": {"duration_s": long if i % LONG_EVERY == 0 else duration}})
    return {"project": "chaos", "name": f"chaos {n} tasks", "files": files}


def worker_pids(group: int) -> dict[str, int]:
    """worker id -> pid of each `devline worker` process in process group `group`."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        # Fields after the command name, which may itself hold spaces or parentheses.
        pgrp = int(stat.rsplit(")", 1)[1].split()[2])
        args = [a.decode(errors="replace") for a in argv if a]
        if pgrp != group or "devline" not in args or "worker" not in args:
            continue
        if "--worker-id" in args:
            found[args[args.index("--worker-id") + 1]] = int(entry.name)
    return found


@dataclass
class Log:
    """What the event log says about one plan, folded as it arrives."""

    plan_id: str
    tasks: set[str] = field(default_factory=set)
    accepted: bool = False
    completed_plan: dict[str, Any] | None = None
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, event_type: str, v: dict[str, Any]) -> None:
        if v.get("plan_id") != self.plan_id:
            return
        if event_type == "PlanAccepted":
            self.accepted = True
            self.tasks = {t["task_id"] for t in v["tasks"]}
        elif event_type == "TaskDispatched":
            self.dispatches.append(v)
        elif event_type in ("TaskCompleted", "TaskFailed"):
            self.results.append((event_type, v))
        elif event_type == "PlanCompleted":
            self.completed_plan = v

    def done(self) -> set[str]:
        return {v["task_id"] for et, v in self.results if et == "TaskCompleted"}

    def in_flight(self) -> dict[str, dict[str, Any]]:
        """dispatch_id -> dispatch, for dispatches with no result yet."""
        answered = {v["dispatch_id"] for _, v in self.results}
        return {d["dispatch_id"]: d for d in self.dispatches if d["dispatch_id"] not in answered}

    def counts(self) -> dict[str, Any]:
        ran = [v for _, v in self.results if not v.get("cached")]
        runs = Counter(v["task_id"] for et, v in self.results
                       if et == "TaskCompleted" and not v.get("cached"))
        by_dispatch = Counter(v["dispatch_id"] for v in ran)
        by_attempt = Counter((v["task_id"], v["attempt"]) for v in ran)
        # One dispatch is one (task, attempt), so the second grouping covers the first and
        # also catches one attempt dispatched twice (e.g. re-queued after a restart).
        items = {k for k, n in by_attempt.items() if n > 1}
        dispatched = Counter(d["task_id"] for d in self.dispatches)
        return {
            "tasks": len(self.tasks),
            "lost": len(self.tasks - self.done()),
            "duplicated": sum(1 for n in runs.values() if n > 1),
            "redelivered": len(items),
            "redelivered_by_dispatch_id": sum(1 for n in by_dispatch.values() if n > 1),
            "redelivered_by_task_attempt": len(items),
            "extra_results": sum(n - 1 for n in by_attempt.values() if n > 1),
            "redispatched_tasks": sum(1 for n in dispatched.values() if n > 1),
            "failed_results": sum(1 for et, _ in self.results if et == "TaskFailed"),
        }


async def follow(settings: Settings, log: Log, stop: asyncio.Event) -> None:
    """Fold devline.events into `log` from the beginning until `stop`."""
    codec = Codec.from_settings(settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=100, **settings.kafka_common())
    await consumer.start()
    try:
        parts = await _partitions(consumer, settings.topic(T.EVENTS))
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    with contextlib.suppress(DecodeError):
                        log.add(*codec.decode(record.value or b""))
    finally:
        await consumer.stop()


async def until(what: str, check: Any, within: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(every)
    raise TimeoutError(f"{what}: not within {within:g}s")


async def kill_one(group: int, log: Log, long_tasks: set[str], say: Any) -> dict[str, Any]:
    """SIGKILL the worker most recently handed a long task that is still running."""
    def victim() -> tuple[str, int, dict[str, Any]] | None:
        pids = worker_pids(group)
        running = [d for d in log.in_flight().values()
                   if d["task_id"] in long_tasks and d["worker_id"] in pids]
        if not running:
            return None
        d = max(running, key=lambda d: d["dispatched_at"])
        return d["worker_id"], pids[d["worker_id"]], d

    worker_id, pid, dispatch = await until("a long task in flight", victim, within=60)
    holding = [d for d in log.in_flight().values() if d["worker_id"] == worker_id]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    say(f"SIGKILL {worker_id} (pid {pid}) while it ran {dispatch['task_id']} "
        f"({len(holding)} task(s) in flight)")
    new_pid = await until("the supervisor's restart", lambda: (
        p if (p := worker_pids(group).get(worker_id)) not in (None, pid) else None), within=60)
    restart_s = time.monotonic() - killed
    say(f"{worker_id} restarted as pid {new_pid} after {restart_s:.1f}s")
    return {"worker_id": worker_id, "pid": pid, "new_pid": new_pid, "restart_s": restart_s,
            "in_flight": [d["dispatch_id"] for d in holding]}


async def chaos(args: argparse.Namespace, prefix: str, work: Path, out: IO[bytes]
                ) -> dict[str, Any]:
    say = (lambda _msg: None) if args.json else (lambda msg: print(msg, flush=True))
    settings = Settings.from_env(bootstrap=args.bootstrap, topic_prefix=prefix,
                                 workspace=work / "out", data_dir=work / "data")
    await create_topics(settings)
    plan = layered_plan(args.tasks, args.width, args.duration, args.long, args.seed)
    long_tasks = {f["path"] for i, f in enumerate(plan["files"]) if i % LONG_EVERY == 0}
    record = plan_record(plan)
    log = Log(record["plan_id"])
    stop = asyncio.Event()
    follower = asyncio.create_task(follow(settings, log, stop))
    say(f"prefix {prefix}  plan {record['plan_id']}  {args.tasks} tasks  "
        f"{args.workers} workers  log {out.name}")
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devline", "run", "--workers", str(args.workers),
        "--no-create-topics", env=child_env(settings), stdout=out,
        stderr=asyncio.subprocess.STDOUT, cwd=str(ROOT), start_new_session=True)
    started = time.monotonic()
    kills: list[dict[str, Any]] = []
    try:
        await until("workers", lambda: len(worker_pids(run.pid)) >= args.workers, within=60)
        await produce(settings, T.PLANS, "PlanSubmitted", record, key=record["plan_id"])
        for k in range(args.kills):
            share = args.kill_after + k * (1 - args.kill_after) / (args.kills + 1)
            await until(f"{share:.0%} of the plan", lambda s=share: log.accepted and len(
                log.done()) >= s * len(log.tasks), within=args.timeout)
            kills.append(await kill_one(run.pid, log, long_tasks, say))
        await until("plan completion", lambda: log.completed_plan, within=args.timeout)
        elapsed = time.monotonic() - started
        say(f"plan completed in {elapsed:.1f}s; waiting {args.settle:g}s for stragglers")
        await asyncio.sleep(args.settle)
    finally:
        if run.returncode is None:
            run.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(run.wait(), 90)
        except TimeoutError:
            os.killpg(run.pid, signal.SIGKILL)
            code = await run.wait()
        stop.set()
        await follower
        if not args.keep_topics:
            await delete_prefixed_topics(settings)
    for kill in kills:  # the killed work: how often, and by whom, was it finished?
        kill["finished_by"] = {d: [v["worker_id"] for _, v in log.results if v["dispatch_id"] == d]
                               for d in kill["in_flight"]}
    return {"prefix": prefix, "plan_id": record["plan_id"], "workers": args.workers,
            "kills": kills, "elapsed_s": round(elapsed, 1),
            "run_exit_code": code, "plan": log.completed_plan, **log.counts()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--tasks", type=int, default=500, help="files in the plan (default 500)")
    parser.add_argument("--width", type=int, default=50, help="files per layer (default 50)")
    parser.add_argument("--duration", type=float, default=0.05,
                        help="seconds each task takes (default 0.05)")
    parser.add_argument("--long", type=float, default=1.0,
                        help="seconds every tenth task takes (default 1.0)")
    parser.add_argument("--kills", type=int, default=1, help="workers to SIGKILL (default 1)")
    parser.add_argument("--kill-after", type=float, default=0.3,
                        help="share of the plan done before the first kill (default 0.3)")
    parser.add_argument("--seed", type=int, default=7, help="plan shape seed (default 7)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait (default 600)")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds to keep reading after completion (default 5)")
    parser.add_argument("--bootstrap", default=None, help="Kafka (env DEVLINE_BOOTSTRAP)")
    parser.add_argument("--workdir", default=None, help="workspace, state and run.log")
    parser.add_argument("--keep-topics", action="store_true", help="leave the run's topics")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # leader moves while topics settle
    prefix = f"chaos{uuid.uuid4().hex[:8]}."
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="devline-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    run_log = work / "run.log"
    with open(run_log, "wb") as out:
        result = asyncio.run(chaos(args, prefix, work, out))
    result["restarts_logged"] = run_log.read_text(errors="replace").count("restarting in")
    if args.json:
        print(json.dumps(result))
    else:
        for kill in result["kills"]:
            for dispatch_id, by in kill["finished_by"].items():
                print(f"killed work {dispatch_id[:8]} of {kill['worker_id']}: finished "
                      f"{len(by)}x by {', '.join(by) or 'nobody'}")
        for key in ("lost", "duplicated", "redelivered", "redelivered_by_dispatch_id",
                    "redelivered_by_task_attempt", "extra_results", "redispatched_tasks",
                    "failed_results", "restarts_logged", "run_exit_code"):
            print(f"{key:28} {result[key]}")
    ok = result["lost"] == 0 and result["plan"] is not None and result["run_exit_code"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
