#!/usr/bin/env python3
"""Restart of the stream processor over a long history: memory store vs RocksDB.

Builds a history of finished tasks (default 50 plans x 2,000 zero-duration demo tasks: the
PlanAccepted, TaskDispatched and TaskCompleted each task had, produced with the project's
codec and folded once by a real `devline processor`, which writes the table changelogs,
the dispatch board and PlanCompleted as a run would; about 30 min at 100,000 tasks). Then,
for each case, starts a `devline processor` (one `devline worker` runs throughout), submits
a 3-file plan at once and measures, from the start: when the tables were recovered (the
processor logs its assignment), when the plan was accepted and when its first
TaskDispatched was in the log; and the processor's peak and final RSS. The cases:

    memory store, rocksdb store from an empty data dir (cold), rocksdb again (warm)

first with every task live, then after retention has retired every plan (PlanRetired, the
fold deletes the tasks: tombstones in the changelogs). Also shown: the changelog records a
start has to read (all of them, or those after the offsets the RocksDB databases hold) and
the dispatch board's records (every processor reads the board from its beginning).

    .venv/bin/python scripts/bench_restart.py                       # its own broker (19094)
    .venv/bin/python scripts/bench_restart.py --plans 5 --tasks 500 # quicker
    .venv/bin/python scripts/bench_restart.py --bootstrap 127.0.0.1:9092
    .venv/bin/python scripts/bench_restart.py --keep ...            # then, measure again:
    .venv/bin/python scripts/bench_restart.py --reuse PREFIX --plans 50 --tasks 2000

Its own broker keeps its data in .kafka-local/19094 (`DEVLINE_KAFKA_PORT=19094
scripts/kafka-local wipe` removes it).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from localbroker import BrokerError, broker  # noqa: E402

from agents.planning import accept, plan_record  # noqa: E402
from devline.settings import Settings  # noqa: E402
from devline.supervisor import child_env  # noqa: E402
from schemas.codec import Codec  # noqa: E402
from streams import topics as T  # noqa: E402
from streams.client import publish_plan  # noqa: E402
from streams.emit import headers_for  # noqa: E402
from streams.topics import create_topics, delete_prefixed_topics  # noqa: E402

TABLES = ("plans", "tasks", "cache", "submissions")


# -- the history -------------------------------------------------------------------------
def plan_files(plan: int, tasks: int, width: int) -> list[dict[str, Any]]:
    """Layers of `width` files, each importing two of the layer before (by declaration)."""
    files = []
    for i in range(tasks):
        layer = i // width
        deps = [] if layer == 0 else sorted({f"m{(layer - 1) * width + (i * 7 + k) % width:05d}.py"
                                             for k in (0, 1)})
        files.append({"path": f"m{i:05d}.py", "depends_on": deps,
                      "description": f"module {i} of plan {plan}: parse, render, store",
                      "simulate": {"duration_s": 0}})
    return files


def finished_plan(plan: int, tasks: int, width: int, at_ms: int) -> list[tuple[str, dict]]:
    """The events a finished run of one plan logged: accepted, each task dispatched and
    completed, in dependency order."""
    record = plan_record({"plan_id": f"hist-{plan:03d}", "project": f"hist{plan:03d}",
                          "name": f"history {plan}", "options": {"executor": "demo"},
                          "files": plan_files(plan, tasks, width)})
    accepted = accept(record, accepted_at=at_ms)
    events: list[tuple[str, dict]] = [("PlanAccepted", accepted)]
    pid = accepted["plan_id"]
    for n, t in enumerate(sorted(accepted["tasks"], key=lambda t: (t["level"], t["task_id"]))):
        tid, dispatch = t["task_id"], f"{pid}-{n}"
        digest = hashlib.sha256(f"{pid}/{tid}".encode()).hexdigest()
        events.append(("TaskDispatched", {
            "event_id": f"d-{dispatch}", "plan_id": pid, "task_id": tid, "path": t["path"],
            "kind": "dev", "attempt": 1, "worker_id": "history", "partition": n % 12,
            "dispatch_id": dispatch, "dispatched_at": at_ms + n}))
        events.append(("TaskCompleted", {
            "event_id": f"c-{dispatch}", "plan_id": pid, "task_id": tid, "path": t["path"],
            "attempt": 1, "worker_id": "history", "dispatch_id": dispatch, "executor": "demo",
            "cache_key": hashlib.sha256(f"key/{pid}/{tid}".encode()).hexdigest(),
            "content": None, "content_hash": digest, "size": 100, "cached": False,
            "started_at": at_ms + n, "finished_at": at_ms + n + 1,
            "project": accepted["project"]}))
    return events


async def produce_history(settings: Settings, plans: int, tasks: int, width: int) -> int:
    codec = Codec.from_settings(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=20,
                                max_request_size=settings.max_message_bytes)
    await producer.start()
    sent = 0
    day_ago = int(time.time() * 1000) - 86_400_000
    try:
        for plan in range(plans):
            futures = []
            for event_type, record in finished_plan(plan, tasks, width, day_ago):
                futures.append(await producer.send(
                    settings.topic(T.EVENTS), codec.encode(event_type, record),
                    key=record["plan_id"].encode(), headers=headers_for(event_type, record)))
            await asyncio.gather(*futures)
            sent += len(futures)
            print(f"  history: plan {plan + 1}/{plans} logged ({sent} events)", flush=True)
    finally:
        await producer.stop()
    return sent


# -- the broker's view ---------------------------------------------------------------------
async def partition_ids(settings: Settings, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        (found,) = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in found["partitions"])
    finally:
        await admin.close()


async def offsets(settings: Settings, topic: str, group: str | None = None
                  ) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
    """(log start, end, group's committed) offsets of each partition of a full topic name."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in await partition_ids(settings, topic)]
        starts = await consumer.beginning_offsets(parts)
        ends = await consumer.end_offsets(parts)
        committed: dict[int, int] = {}
        if group:
            for tp in parts:
                committed[tp.partition] = int(await consumer.committed(tp) or 0)
        return ({tp.partition: o for tp, o in starts.items()},
                {tp.partition: o for tp, o in ends.items()}, committed)
    finally:
        await consumer.stop()


async def commit_to_end(settings: Settings, topic: str, group: str) -> None:
    """Move a consumer group to the end of a topic (the history's work items were for
    workers long gone: the measured worker must not wade through them)."""
    _, ends, _ = await offsets(settings, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        points = {TopicPartition(topic, p): end for p, end in ends.items()}
        consumer.assign(list(points))
        await consumer.commit(points)
    finally:
        await consumer.stop()


async def pad_plans(settings: Settings) -> None:
    """A plan submitted while a processor recovers its tables, to a devline.plans partition
    its group never committed (or committed at 0), could be missed: faust-streaming 0.15.3
    drops records fetched for paused partitions and rewinds only to a committed offset
    above 0. One empty record per partition, committed past, gives each such an offset."""
    topic = settings.topic(T.PLANS)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        for p in sorted(await producer.partitions_for(topic)):
            await producer.send_and_wait(topic, None, key=b"bench-pad", partition=p)
    finally:
        await producer.stop()
    await commit_to_end(settings, topic, settings.group("devline-streams"))


async def count_events(settings: Settings, kinds: set[str]) -> dict[str, int]:
    codec = Codec.from_settings(settings)
    counts = dict.fromkeys(kinds, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=settings.max_message_bytes)
    await consumer.start()
    try:
        topic = settings.topic(T.EVENTS)
        parts = [TopicPartition(topic, p) for p in await partition_ids(settings, topic)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    kind = dict(r.headers or ()).get("event-type", b"").decode()
                    if not kind:
                        kind = codec.decode(r.value or b"")[0]
                    if kind in counts:
                        counts[kind] += 1
        return counts
    finally:
        await consumer.stop()


async def changelog_records(settings: Settings, data_dir: Path | None) -> int:
    """Changelog records a processor reads at start: all of them for a memory store or an
    empty data dir, else those after the offset each RocksDB database says it holds."""
    held = persisted_offsets(settings, data_dir) if data_dir else {}
    total = 0
    for table in TABLES:
        topic = settings.topic(T.changelog(table))
        starts, ends, _ = await offsets(settings, topic)
        for p, end in ends.items():
            first = held.get((table, p), starts[p] - 1) + 1
            total += max(end - max(first, starts[p]), 0)
    return total


def persisted_offsets(settings: Settings, data_dir: Path) -> dict[tuple[str, int], int]:
    from rocksdict import AccessType, Rdict

    from streams.edge.state import RocksStore

    state = data_dir / (settings.topic_prefix or "default") / "faust"  # /<instance>/v1/tables
    found = {}
    for path in state.glob("*/v1/tables/*-*.db"):
        table, _, part = path.name[:-3].rpartition("-")
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            raw = db.get(RocksStore.offset_key)
            if raw is not None:
                found[(table, int(part))] = int(raw)
        finally:
            db.close()
    return found


# -- processes ---------------------------------------------------------------------------
def memory_mb(pid: int) -> tuple[float, float]:
    """(peak, current) resident memory of a process in MB."""
    peak = now = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
            elif line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak, now


def logged_at(log: Path, text: str) -> float:
    """When a process first logged a line containing `text` (epoch seconds), else NaN."""
    for line in log.read_text(errors="replace").splitlines():
        stamp = re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", line)
        if text in line and stamp:
            return datetime.strptime(stamp.group(), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return float("nan")


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 60.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


def start(settings: Settings, work: Path, name: str, args: list[str], **env: str) -> Proc:
    log = work / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen([sys.executable, "-m", "devline", *args],
                                 env={**child_env(settings), **env}, stdout=out,
                                 stderr=subprocess.STDOUT, cwd=str(ROOT), start_new_session=True)
    return Proc(popen, log)


def processor_env(store: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {"DEVLINE_TABLE_STORE": store, "DEVLINE_DATA_DIR": str(data_dir), **extra}


async def until(check: Callable[[], Any], within: float, every: float = 1.0,
                what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(every)
    raise TimeoutError(f"{what} not reached within {within:.0f}s")


async def folded(settings: Settings, kind: str, want: int) -> bool:
    """`want` events of `kind` are in the log and the processor has committed every event."""
    if (await count_events(settings, {kind}))[kind] < want:
        return False
    _, ends, committed = await offsets(settings, settings.topic(T.EVENTS),
                                       settings.group("devline-streams"))
    return all(committed.get(p, 0) >= end for p, end in ends.items())


# -- one measured start ---------------------------------------------------------------------
@dataclass
class Figures:
    case: str
    changelog_records: int
    board_records: int = 0
    tables_s: float = float("nan")
    accepted_s: float = float("nan")
    dispatched_s: float = float("nan")
    peak_mb: float = 0.0
    rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)


async def measured_start(settings: Settings, work: Path, case: str, store: str,
                         data_dir: Path, n: int, within: float) -> Figures:
    figures = Figures(case, await changelog_records(
        settings, data_dir if store == "rocksdb" else None))
    starts, board_ends, _ = await offsets(settings, settings.topic(T.BOARD))
    figures.board_records = sum(board_ends.values()) - sum(starts.values())
    topic = settings.topic(T.EVENTS)
    _, ends, _ = await offsets(settings, topic)
    plan_id = f"probe-{n}-{uuid.uuid4().hex[:6]}"
    codec = Codec.from_settings(settings)
    t0 = time.time()
    proc = start(settings, work, f"processor-{n}", ["processor"],
                 **processor_env(store, data_dir))
    try:
        await publish_plan(settings, plan_record({
            "plan_id": plan_id, "project": "probe", "name": "probe",
            "options": {"executor": "demo"},
            "files": [{"path": f"p{i}.py", "description": plan_id,  # never a cache hit
                       "simulate": {"duration_s": 0}} for i in range(3)]}))
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap,
                                    enable_auto_commit=False,
                                    max_partition_fetch_bytes=settings.max_message_bytes)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in ends]
            consumer.assign(parts)
            for tp in parts:
                consumer.seek(tp, ends[tp.partition])
            deadline = time.time() + within
            while time.time() < deadline and figures.dispatched_s != figures.dispatched_s:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        kind, value = codec.decode(r.value or b"")
                        if value.get("plan_id") != plan_id:
                            continue
                        if kind == "PlanAccepted":
                            figures.accepted_s = r.timestamp / 1000 - t0
                        elif kind == "TaskDispatched" and figures.dispatched_s != \
                                figures.dispatched_s:
                            figures.dispatched_s = r.timestamp / 1000 - t0
                if proc.popen.poll() is not None:
                    figures.notes.append(f"the processor exited ({proc.popen.returncode}) "
                                         f"before dispatching; see {proc.log}")
                    return figures
        finally:
            await consumer.stop()
        if figures.dispatched_s != figures.dispatched_s:
            figures.notes.append(f"no dispatch within {within:.0f}s")
        figures.tables_s = logged_at(proc.log, "devline.scheduler: assigned:") - t0
        await asyncio.sleep(5)  # steady state: recovery's garbage collected or not
        figures.peak_mb, figures.rss_mb = memory_mb(proc.popen.pid)
    finally:
        proc.stop()
    print(f"  {case}: first dispatch {figures.dispatched_s:.1f}s, peak {figures.peak_mb:.0f} MB",
          flush=True)
    return figures


# -- the run ---------------------------------------------------------------------------------
async def run(args: argparse.Namespace, bootstrap: str, work: Path) -> list[Figures]:
    prefix = args.reuse or f"rs{uuid.uuid4().hex[:6]}."
    print(f"topic prefix {prefix}", flush=True)
    settings = Settings.from_env(bootstrap=bootstrap, topic_prefix=prefix,
                                 workspace=work / "out", data_dir=work / "data",
                                 worker_slots=4)
    await create_topics(settings)
    if not args.reuse:
        await build_history(args, settings, work)
    try:
        return await measure_all(args, settings, work)
    finally:
        if args.bootstrap and not args.keep:
            await delete_prefixed_topics(settings)


async def build_history(args: argparse.Namespace, settings: Settings, work: Path) -> None:
    t = time.monotonic()
    events = await produce_history(settings, args.plans, args.tasks, args.width)
    print(f"history logged: {events} events in {time.monotonic() - t:.0f}s; folding it",
          flush=True)
    t = time.monotonic()
    build = start(settings, work, "processor-build", ["processor"],
                  **processor_env("memory", work / "build"))
    try:
        await until(lambda: folded(settings, "PlanCompleted", args.plans), args.timeout,
                    every=5, what="the history folded")
    finally:
        build.stop()
    print(f"history folded by a processor in {time.monotonic() - t:.0f}s", flush=True)
    await commit_to_end(settings, settings.topic(T.WORK_DEV), settings.group("devline-workers"))
    await pad_plans(settings)


async def measure_all(args: argparse.Namespace, settings: Settings, work: Path
                      ) -> list[Figures]:
    worker = start(settings, work, "worker", ["worker", "--worker-id", "bench-w1"])
    results: list[Figures] = []
    n = 0
    try:
        for phase in ("before retention", "after retention"):
            if phase == "after retention":
                results.append(await retire_all(args, settings, work))
            cold = work / "none"
            for case in ("memory", "rocksdb cold", "rocksdb warm"):
                for _ in range(2):  # once more if it could not be measured
                    n += 1
                    store, data_dir = ("memory", work / f"mem-{n}") if case == "memory" \
                        else ("rocksdb", cold if case == "rocksdb warm" else work / f"rocks-{n}")
                    got = await measured_start(settings, work, f"{phase}: {case}", store,
                                               data_dir, n, args.start_timeout)
                    if not got.notes:
                        break
                    print(f"  {got.case}: {'; '.join(got.notes)}", flush=True)
                if case == "rocksdb cold":
                    cold = data_dir  # the warm start opens what the cold one left
                results.append(got)
    finally:
        worker.stop()
    return results


async def retire_all(args: argparse.Namespace, settings: Settings, work: Path) -> Figures:
    """Every finished plan retired by a processor with a 1 s retention; its figures too."""
    plans = (await count_events(settings, {"PlanAccepted"}))["PlanAccepted"]
    t0 = time.monotonic()
    proc = start(settings, work, "processor-retire", ["processor"],
                 **processor_env("rocksdb", work / "retire", DEVLINE_PLAN_RETENTION_S="1"))
    try:
        await until(lambda: folded(settings, "PlanRetired", plans), args.timeout, every=5,
                    what="every plan retired")
        await asyncio.sleep(3)
        peak, now = memory_mb(proc.popen.pid)
    finally:
        proc.stop()
    took = time.monotonic() - t0
    print(f"retention: {plans} plans retired in {took:.0f}s", flush=True)
    return Figures("retiring every plan (rocksdb)", -1, peak_mb=peak, rss_mb=now,
                   notes=[f"{took:.0f}s"])


def table(results: list[Figures], args: argparse.Namespace) -> str:
    rows = [("case", "changelog records to read", "board records", "tables ready s",
             "plan accepted s", "first dispatch s", "peak RSS MB", "RSS MB after")]
    for f in results:
        if f.changelog_records < 0:  # the retention pass
            rows.append((f.case, "-", "-", "-", "-", f"(took {f.notes[0]})",
                         f"{f.peak_mb:.0f}", f"{f.rss_mb:.0f}"))
            continue
        rows.append((f.case, f"{f.changelog_records:,}", f"{f.board_records:,}",
                     f"{f.tables_s:.1f}", f"{f.accepted_s:.1f}", f"{f.dispatched_s:.1f}",
                     f"{f.peak_mb:.0f}", f"{f.rss_mb:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"history: {args.plans} plans x {args.tasks} finished tasks"]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                               for j, (c, w) in enumerate(zip(r, widths, strict=True))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--plans", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=2000, help="finished tasks per plan")
    parser.add_argument("--width", type=int, default=200, help="tasks per dependency layer")
    parser.add_argument("--port", type=int, default=19094)
    parser.add_argument("--bootstrap", default=None, help="use this broker instead")
    parser.add_argument("--keep", action="store_true",
                        help="keep the topics (and a broker of our own running) afterwards")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds for folding the history and for retiring it")
    parser.add_argument("--start-timeout", type=float, default=1800,
                        help="seconds a measured start may take to dispatch")
    parser.add_argument("--reuse", metavar="PREFIX", default=None,
                        help="measure over the history an earlier run left under this topic "
                        "prefix on the same broker (skips logging and folding it)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="devline-restart-"))
    print(f"work dir {work}", flush=True)
    try:
        with broker(args.port, args.bootstrap, keep=args.keep) as bootstrap:
            results = asyncio.run(run(args, bootstrap, work))
    except BrokerError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(table(results, args))
    for f in results:
        if f.changelog_records >= 0 and f.notes:
            print(f"{f.case}: {'; '.join(f.notes)}")
    print(json.dumps([f.__dict__ for f in results]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
