#!/usr/bin/env python3
"""Failover of the dispatcher when its machine is gone: nothing restarts it.

Two (or more) `devline processor` processes on one prefix, started directly (no `devline
run`, so no warm spare and no restart), two workers; a layered plan runs; the elected
dispatcher is SIGKILLed at a third of the plan. Reports the seconds from the kill to the
new dispatcher's election (the seat moves after the dispatcher group's session timeout) and
to its first TaskDispatched (which also waits for the dead one's plans to move to another
processor, after the processors group's session timeout), to the plan's completion, and
whether any task ran twice. `scripts/chaos.py --processors 3`
measures the other case: `devline run` promotes a warm spare that takes the seat back.

    .venv/bin/python scripts/bench_failover.py --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from chaos import Watch, follow, layered_plan, until  # noqa: E402

from agents.planning import plan_record  # noqa: E402
from devline.settings import Settings  # noqa: E402
from devline.supervisor import child_env  # noqa: E402
from streams import topics as T  # noqa: E402
from streams.client import produce  # noqa: E402
from streams.topics import create_topics, delete_prefixed_topics  # noqa: E402


def spawn(settings: Settings, args: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - lives as long as the child
    return subprocess.Popen([sys.executable, "-m", "devline", *args],
                            env={**child_env(settings), **env}, stdout=out,
                            stderr=subprocess.STDOUT, cwd=ROOT)


def elections(logs: list[Path]) -> list[tuple[float, int]]:
    """(when, pid) of every `elected dispatcher` log line, oldest first."""
    found = []
    for log in logs:
        for m in re.finditer(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO [^\n]*"
                             r"elected dispatcher \(pid (\d+)", log.read_text(errors="replace")):
            at = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
            found.append((at + int(m.group(2)) / 1000, int(m.group(3))))
    return sorted(found)


def elected(logs: list[Path]) -> int | None:
    seats = elections(logs)
    return seats[-1][1] if seats else None


async def run(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="devline-failover-"))
    journal = work / "runs.jsonl"
    (work / "executors.json").write_text(json.dumps({"demo": {"journal": str(journal)}}))
    settings = Settings.from_env(bootstrap=args.bootstrap,
                                 topic_prefix=f"failover{uuid.uuid4().hex[:8]}.",
                                 workspace=work / "out", data_dir=work / "data",
                                 executor_config=work / "executors.json")
    await create_topics(settings)
    logs = [work / f"processor-{i}.log" for i in range(args.processors)]
    procs = [spawn(settings, ["processor"], log, DEVLINE_INSTANCE_ID=f"failover-p{i}")
             for i, log in enumerate(logs)]
    procs += [spawn(settings, ["worker", "--worker-id", f"failover-w{i}"],
                    work / f"worker-{i}.log") for i in range(2)]
    plan = plan_record(layered_plan(args.tasks, 25, args.duration, args.duration, 1))
    watch = Watch(plan["plan_id"])
    stop = asyncio.Event()
    follower = asyncio.create_task(follow(settings, watch, stop))
    try:
        await until("a dispatcher", lambda: elected(logs), 90)
        await produce(settings, T.PLANS, "PlanSubmitted", plan, key=plan["plan_id"])
        await until("a third of the plan", lambda: watch.tasks and len(watch.done) >=
                    watch.tasks / 3, args.timeout)
        victim = elected(logs)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        seat = await until("another dispatcher", lambda: next(
            (at for at, pid in elections(logs) if at >= killed and pid != victim), None), 120)
        resumed = await until("a dispatch by the new dispatcher",
                              lambda: watch.first("TaskDispatched", seat), 120)
        await until("the plan's end", lambda: watch.finished, args.timeout)
        done = time.time()
    finally:
        stop.set()
        await follower
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        await delete_prefixed_topics(settings)
    finished = Counter(json.loads(line)["task"] for line in journal.read_text().splitlines()
                       if '"finish"' in line)
    return {"processors": args.processors, "tasks": watch.tasks,
            "seat_moved_after_s": round(seat - killed, 2),
            "dispatching_after_s": round(resumed - killed, 2),
            "plan_done_after_kill_s": round(done - killed, 1),
            "lost": watch.tasks - len(watch.done),
            "ran_twice": sum(1 for n in finished.values() if n > 1),
            "new_dispatcher_pid": elected(logs), "killed_pid": victim, "logs": str(work)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", default=os.environ.get("DEVLINE_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--processors", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--duration", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=300)
    result = asyncio.run(run(ap.parse_args()))
    print("\n".join(f"  {k:24} {v}" for k, v in result.items()))
    return 0 if result["lost"] == 0 and result["ran_twice"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
