#!/usr/bin/env python3
"""Fault run: a layered plan through `devline run` while workers, the stream processor and
the broker are killed; then count what the log, the executors and the disk say.

Per seed: a broker of its own (scripts/kafka-local on --port, so nothing else is
disturbed), a fresh topic prefix, workspace and artifact store, `devline run --min-workers
2 --max-workers 4`, and a layered plan of --tasks files (each imports one or two files of
the layer before; every tenth task runs longer so kills land mid-task). At seeded moments
of progress it SIGKILLs a worker (the one most recently handed a long task), the
processor, or the broker (kill -9; down --broker-down seconds the first time, 3 s after).
The demo executor journals every run's start and finish, so executor runs are counted
where they happen, not inferred from the log.

Reported per run:
  lost          tasks with no TaskCompleted
  duplicated    tasks whose executor finished more than once
  redelivered   tasks whose executor started more than once (a kill mid-run re-runs it)
  skipped       stale or duplicate work items workers recognised and did not run
  resume        seconds from a processor kill to its next dispatch (target < 5 s), and
                from the broker answering again to the next dispatch (target < 3 s)
  tables        the processor's tables (changelogs) equal a fold of the event log
  files         every file on disk has the hash its last TaskCompleted reports

    .venv/bin/python scripts/chaos.py --seeds 1 2 3 --tasks 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import signal
import subprocess
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
from streams.client import produce, records, replay, topic_partitions  # noqa: E402
from streams.topics import create_topics, delete_prefixed_topics, wait_for_topics  # noqa: E402

LONG_EVERY = 10
KAFKA = ROOT / "scripts" / "kafka-local"


def layered_plan(n: int, width: int, duration: float, long: float, seed: int,
                 defects: float = 0.0) -> dict[str, Any]:
    """`n` Python files in layers of `width`; each imports one or two of the layer before.
    A `defects` share start with a version the checks reject (one fix each)."""
    rng = random.Random(seed)
    faulty = random.Random(seed + 1)
    files = []
    for i in range(n):
        layer = i // width
        prev = list(range((layer - 1) * width, layer * width)) if layer else []
        deps = sorted(rng.sample(prev, min(len(prev), rng.choice((1, 2)))))
        body = "".join(f"from m{d:04d} import X{d}\n" for d in deps)
        body += f"X{i} = {' + '.join(f'X{d}' for d in deps) or i}\n"
        simulate: dict[str, Any] = {"duration_s": long if i % LONG_EVERY == 0 else duration}
        if faulty.random() < defects:
            simulate["qa_fail_first"] = 1
        files.append({"path": f"m{i:04d}.py", "content": body, "simulate": simulate})
    return {"project": "chaos", "name": f"chaos {n} tasks seed {seed}", "files": files}


def pids_of(group: int, role: str) -> dict[str, int]:
    """`devline <role>` processes in process group `group`: {worker id or role: pid}."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        pgrp = int(stat.rsplit(")", 1)[1].split()[2])
        args = [a.decode(errors="replace") for a in argv if a]
        if pgrp != group or "devline" not in args or role not in args:
            continue
        name = args[args.index("--worker-id") + 1] if "--worker-id" in args else role
        found[name] = int(entry.name)
    return found


@dataclass
class Watch:
    """devline.events as it arrives: (broker timestamp, type, record)."""

    plan_id: str
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    tasks: int = 0
    done: set[str] = field(default_factory=set)
    finished: dict[str, Any] | None = None

    def add(self, ts: float, event_type: str, v: dict[str, Any]) -> None:
        if v.get("plan_id") != self.plan_id:
            return
        self.events.append((ts, event_type, v))
        if event_type == "PlanAccepted":
            self.tasks = len(v["tasks"])
        elif event_type == "TaskCompleted":
            self.done.add(v["task_id"])
        elif event_type == "PlanCompleted":
            self.finished = v

    def first(self, event_type: str, after: float) -> float | None:
        return next((ts for ts, et, _ in self.events if et == event_type and ts >= after), None)

    def in_flight(self) -> list[dict[str, Any]]:
        answered = {v["dispatch_id"] for _, et, v in self.events
                    if et in ("TaskCompleted", "TaskFailed")}
        return [v for _, et, v in self.events
                if et == "TaskDispatched" and v["dispatch_id"] not in answered]


async def follow(settings: Settings, watch: Watch, stop: asyncio.Event) -> None:
    codec = Codec.from_settings(settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=100, **settings.kafka_common())
    await consumer.start()
    try:
        await wait_for_topics(settings)  # just created: metadata may lag
        parts = await topic_partitions(consumer, settings.topic(T.EVENTS))
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while not stop.is_set():
            try:
                batch = await consumer.getmany(timeout_ms=100)
            except Exception:  # the broker is down: keep trying
                await asyncio.sleep(0.2)
                continue
            for recs in batch.values():
                for r in recs:
                    with contextlib.suppress(DecodeError):
                        watch.add(r.timestamp / 1000, *codec.decode(r.value or b""))
    finally:
        await consumer.stop()


FOLLOWER: asyncio.Task[None] | None = None  # the event-log reader every wait depends on


async def until(what: str, check: Any, within: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if FOLLOWER is not None and FOLLOWER.done():
            FOLLOWER.result()  # it died: say why instead of waiting for nothing
            raise RuntimeError("the event-log reader stopped")
        got = check()
        if got:
            return got
        await asyncio.sleep(every)
    raise TimeoutError(f"{what}: not within {within:g}s")


def kafka(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEVLINE_KAFKA_PORT": str(port)}
    return subprocess.run([str(KAFKA), *args], env=env, capture_output=True, text=True,
                          check=False)


def broker_pid(port: int) -> int:
    return int((ROOT / ".kafka-local" / str(port) / "kafka.pid").read_text())


# -- faults ---------------------------------------------------------------------------------
async def kill_worker(group: int, watch: Watch, say: Any) -> dict[str, Any]:
    def victim() -> tuple[str, int, list[dict[str, Any]]] | None:
        pids = pids_of(group, "worker")
        by_pid = {f".{pid}": (name, pid) for name, pid in pids.items()}
        flying = [d for d in watch.in_flight() if d["task_id"].endswith("0.py")]
        for d in sorted(flying, key=lambda d: -d["dispatched_at"]):
            for suffix, (name, pid) in by_pid.items():
                if d["worker_id"].endswith(suffix):
                    holding = [x for x in watch.in_flight() if x["worker_id"] == d["worker_id"]]
                    return name, pid, holding
        return None

    name, pid, holding = await until("a long task in flight", victim, within=120)
    os.kill(pid, signal.SIGKILL)
    at = time.time()
    tasks = {d["task_id"] for d in holding}
    say(f"  SIGKILL worker {name} (pid {pid}) running {sorted(tasks)}")
    await until("its tasks done again", lambda: tasks <= watch.done, within=180)
    return {"fault": "worker", "recovered_s": round(time.time() - at, 2),
            "tasks": sorted(tasks)}


def processor_pid(run_log: Path) -> int | None:
    """The dispatching processor: the last one to say it was elected, if it still runs."""
    found = None
    for line in run_log.read_text(errors="replace").splitlines():
        if m := re.search(r"elected dispatcher \(pid (\d+)", line):
            found = int(m.group(1))
    if found is None:
        return None
    try:
        os.kill(found, 0)
    except ProcessLookupError:
        return None
    return found


async def kill_processor(run_log: Path, watch: Watch, say: Any) -> dict[str, Any]:
    pid = await until("the dispatching processor", lambda: processor_pid(run_log), 60)
    os.kill(pid, signal.SIGKILL)
    at = time.time()
    say(f"  SIGKILL processor (pid {pid})")
    resumed = await until("a dispatch after the kill",
                          lambda: watch.first("TaskDispatched", at), within=120)
    return {"fault": "processor", "resume_s": round(resumed - at, 2)}


async def kill_broker(settings: Settings, port: int, down: float, watch: Watch, say: Any
                      ) -> dict[str, Any]:
    pid = broker_pid(port)
    os.kill(pid, signal.SIGKILL)
    at = time.time()
    say(f"  kill -9 broker (pid {pid}); down for {down:g}s")
    await asyncio.sleep(down)
    started = await asyncio.to_thread(kafka, port, "start")
    if started.returncode != 0:
        raise RuntimeError(f"broker did not come back: {started.stderr}")
    up = time.time()
    served = await serving(settings)
    resumed = await until("a dispatch after the broker came back",
                          lambda: watch.first("TaskDispatched", up), within=180)
    say(f"    broker answering {clock(up)}, serving every partition {clock(served)}, first "
        f"dispatch {clock(resumed)}")
    return {"fault": "broker", "down_s": round(up - at, 1), "resume_s": round(resumed - up, 2),
            "resume_after_served_s": round(max(resumed - served, 0.0), 2),
            "served_after_up_s": round(served - up, 2)}


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


async def serving(settings: Settings) -> float:
    """When the broker serves every partition of the run's topics again: a restarted broker
    answers metadata requests (and names itself leader) before it has recovered its logs,
    and answers "not leader" to reads and writes until then. ListOffsets must succeed."""
    from aiokafka import TopicPartition

    parts = {settings.topic(spec.name): spec.partitions(settings) for spec in T.CATALOGUE}
    tps = [TopicPartition(t, p) for t, n in parts.items() for p in range(n)]
    while True:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap,
                                    request_timeout_ms=2000)
        try:
            await consumer.start()
            while True:
                try:
                    await asyncio.wait_for(consumer.end_offsets(tps), 3)
                    return time.time()
                except Exception:  # not serving yet
                    await asyncio.sleep(0.05)
        except Exception:  # noqa: S110 - not answering yet
            pass
        finally:  # a timed-out read leaves the client's tasks cancelled: stop anyway
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await consumer.stop()
        await asyncio.sleep(0.05)


# -- checks ---------------------------------------------------------------------------------
def journal_counts(journal: Path) -> tuple[Counter[str], Counter[str]]:
    starts: Counter[str] = Counter()
    finishes: Counter[str] = Counter()
    for line in journal.read_text().splitlines():
        row = json.loads(line)
        # Per attempt: a fix task is the same task's next attempt, not a duplicate run.
        (starts if row["run"] == "start" else finishes)[f"{row['task']}#{row['attempt']}"] += 1
    return starts, finishes


async def tables_equal_fold(settings: Settings, plan_id: str) -> bool:
    state = (await replay(settings, plan_id))[plan_id]
    live: dict[str, dict[str, Any]] = {"plans": {}, "tasks": {}}
    for table in live:
        async for r in records(settings, f"devline-streams-{table}-changelog", idle_timeout=1):
            key = r.key.decode()
            key = json.loads(key) if key.startswith('"') else key
            live[table][key] = json.loads(r.value) if r.value is not None else None
    same = live["plans"].get(plan_id) == state.header
    for task_id, task in state.tasks.items():
        same = same and live["tasks"].get(f"{plan_id}/{task_id}") == task
    return same


def files_match(watch: Watch, workspace: Path) -> tuple[int, int]:
    last: dict[str, str] = {}
    for _, et, v in watch.events:
        if et == "TaskCompleted":
            last[v["path"]] = v["content_hash"]
    good = 0
    for path, digest in last.items():
        target = workspace / "chaos" / path
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == digest:
            good += 1
    return good, len(last)


# -- one run ----------------------------------------------------------------------------------
async def run_seed(args: argparse.Namespace, seed: int, work: Path, out: IO[bytes]
                   ) -> dict[str, Any]:
    say = print if not args.json else (lambda *_: None)
    prefix = f"chaos{uuid.uuid4().hex[:8]}."
    journal = work / "runs.jsonl"
    config = work / "executors.json"
    config.write_text(json.dumps({"demo": {"journal": str(journal)}}))
    settings = Settings.from_env(bootstrap=f"127.0.0.1:{args.port}", topic_prefix=prefix,
                                 workspace=work / "out", data_dir=work / "data",
                                 executor_config=config)
    await create_topics(settings)
    plan = plan_record(layered_plan(args.tasks, args.width, args.duration, args.long, seed,
                                    args.defects))
    watch = Watch(plan["plan_id"])
    stop = asyncio.Event()
    global FOLLOWER
    follower = FOLLOWER = asyncio.create_task(follow(settings, watch, stop))
    rng = random.Random(seed)
    faults = (["worker"] * args.worker_kills + ["processor"] * args.processor_kills
              + ["broker"] * args.broker_kills)
    rng.shuffle(faults)
    marks = sorted(rng.uniform(0.05, 0.9) for _ in faults)
    say(f"seed {seed}: prefix {prefix} plan {plan['plan_id']} {args.tasks} tasks; faults "
        + ", ".join(f"{k}@{m:.0%}" for k, m in zip(faults, marks, strict=True)))
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devline", "run", "--processors", str(args.processors),
        "--min-workers", str(args.min_workers),
        "--max-workers", str(args.max_workers), "--scale-down-window", "10",
        "--no-create-topics", env=child_env(settings), stdout=out,
        stderr=asyncio.subprocess.STDOUT, cwd=str(ROOT), start_new_session=True)
    started = time.time()
    done_faults: list[dict[str, Any]] = []
    broker_downs = [args.broker_down] + [3.0] * max(args.broker_kills - 1, 0)
    try:
        await until("workers", lambda: len(pids_of(run.pid, "worker")) >= args.min_workers, 60)
        await produce(settings, T.PLANS, "PlanSubmitted", plan, key=plan["plan_id"])
        for kind, mark in zip(faults, marks, strict=True):
            await until(f"{mark:.0%} done", lambda m=mark: watch.tasks and len(watch.done)
                        >= m * watch.tasks, within=args.timeout)
            if kind == "worker":
                done_faults.append(await kill_worker(run.pid, watch, say))
            elif kind == "processor":
                done_faults.append(await kill_processor(work / "run.log", watch, say))
            else:
                done_faults.append(await kill_broker(settings, args.port, broker_downs.pop(0),
                                                     watch, say))
            say(f"    {done_faults[-1]}")
        await until("plan completion", lambda: watch.finished, within=args.timeout)
        elapsed = time.time() - started
        await asyncio.sleep(args.settle)
    finally:
        if run.returncode is None:
            run.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(run.wait(), 120)
        except TimeoutError:
            os.killpg(run.pid, signal.SIGKILL)
            code = await run.wait()
        stop.set()
        await follower
    result = {"seed": seed, **await report(settings, plan, watch, journal, work, done_faults,
                                           elapsed, code)}
    await delete_prefixed_topics(settings)  # one broker serves every seed: keep it light
    return result


async def report(settings: Settings, plan: dict[str, Any], watch: Watch, journal: Path,
                 work: Path, done_faults: list[dict[str, Any]], elapsed: float, code: int
                 ) -> dict[str, Any]:
    starts, finishes = journal_counts(journal)
    completed = Counter(v["task_id"] for _, et, v in watch.events
                        if et == "TaskCompleted" and not v["cached"])
    good, total = files_match(watch, settings.workspace)
    log_text = (work / "run.log").read_text(errors="replace")
    return {
        "tasks": watch.tasks, "elapsed_s": round(elapsed, 1),
        "lost": watch.tasks - len(watch.done),
        "duplicated": sum(1 for n in finishes.values() if n > 1),
        "duplicated_results": sum(1 for n in completed.values() if n > 1),
        "redelivered": sum(1 for n in starts.values() if n > 1),
        "skipped": log_text.count("skipping work item"),
        "faults": done_faults,
        "tables_equal_fold": await tables_equal_fold(settings, plan["plan_id"]),
        "files_ok": f"{good}/{total}", "run_exit_code": code,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="one run per seed")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--width", type=int, default=50, help="files per layer")
    parser.add_argument("--duration", type=float, default=0.05, help="seconds per task")
    parser.add_argument("--long", type=float, default=1.0, help="seconds every tenth task")
    parser.add_argument("--defects", type=float, default=0.0,
                        help="share of files whose first version fails its checks and goes "
                        "through the fix loop (default 0)")
    parser.add_argument("--processors", type=int, default=1,
                        help="stream processors (processor kills hit the dispatching one)")
    parser.add_argument("--min-workers", type=int, default=2)
    parser.add_argument("--max-workers", type=int, default=4)
    parser.add_argument("--worker-kills", type=int, default=5)
    parser.add_argument("--processor-kills", type=int, default=2)
    parser.add_argument("--broker-kills", type=int, default=2)
    parser.add_argument("--broker-down", type=float, default=25.0,
                        help="seconds the broker stays down the first time (default 25)")
    parser.add_argument("--port", type=int, default=19092, help="the run's own broker port")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the broker is killed on purpose
    up = kafka(args.port, "start")
    if up.returncode != 0:
        print(up.stderr, file=sys.stderr)
        return 1
    ok = True
    try:
        for seed in args.seeds:
            work = Path(args.workdir or tempfile.mkdtemp(prefix="devline-chaos-")) / str(seed)
            work.mkdir(parents=True, exist_ok=True)
            with open(work / "run.log", "wb") as out:
                result = asyncio.run(run_seed(args, seed, work, out))
            print(json.dumps(result) if args.json else
                  "\n".join(f"  {k:20} {v}" for k, v in result.items()), flush=True)
            ok = ok and result["lost"] == 0 and result["duplicated"] == 0 \
                and result["tables_equal_fold"] and result["run_exit_code"] == 0
    finally:
        kafka(args.port, "stop")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
