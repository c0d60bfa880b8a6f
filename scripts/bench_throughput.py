#!/usr/bin/env python3
"""Tasks per second through the pool with the demo executor at zero duration.

Side by side in one run, on the same broker:
  * devline: a plan of N independent zero-duration files through `devline run --workers W`
    (planner, scheduler fold, dispatch to free slots, workers, results, cache writes);
  * baseline: raw aiokafka, the same N work items produced and consumed back by W
    consumers in a group, each consumer producing one result record per item (the
    broker round trips devline cannot avoid, with none of its bookkeeping).

    .venv/bin/python scripts/bench_throughput.py --tasks 1000 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from bench_pipeline import (
    BenchError,
    delete_topics,
    running_pipeline,
    wait_until_ready,
)
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as CTopicPartition

from agents.planning import plan_record
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import produce, records, started_consumer, topic_partitions
from streams.topics import create_topics

OFFSETS_TOPIC = "__consumer_offsets"
IDLE_S = 3.0  # seconds of idle CPU measured before the plan is submitted


def plan(n: int, run: str) -> dict:
    # Unique content per run so the result cache cannot answer for the executor.
    # QA off: this measures the pool and the pipeline; checks are measured on their own.
    return {"project": f"tp-{run}", "name": "throughput", "options": {"qa": "off"}, "files": [
        {"path": f"m{i:05d}.py", "content": f"# {run}\nX = {i}\n"} for i in range(n)]}


def cpu_by_role(session: int) -> dict[str, float]:
    """CPU seconds (user + system) of each process of a session, summed by its `devline`
    role (processor, worker, sink, run, ...), and of a broker running on this machine
    (serving every client, this run's readers too): read from /proc, Linux only."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        args = [a.decode() for a in argv if a]
        if "kafka.Kafka" in args:  # a local broker (scripts/kafka-local): every client's
            role = "broker"
        elif int(fields[3]) != session:  # field 6, the session id
            continue
        else:
            role = args[args.index("devline") + 1] if "devline" in args[:-1] else "other"
        if "--standby" in args:
            role += " (spare)"
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


async def records_by_topic(settings: Settings) -> dict[str, int]:
    """Records in each topic under the run's prefix (end offsets summed over partitions;
    the prefix and Faust's group name left off the topic names), and offset commits (of
    every group on the broker: another client's commits count too)."""
    consumer = await started_consumer(settings)
    try:
        out = {}
        for topic in sorted({OFFSETS_TOPIC, *(t for t in await consumer.topics()
                                              if t.startswith(settings.topic_prefix))}):
            try:
                ends = await consumer.end_offsets(await topic_partitions(consumer, topic))
            except Exception as exc:  # a count, not the run: left out, said why
                print(f"records in {topic} not counted: {exc!r}", file=sys.stderr)
                continue
            name = topic.removeprefix(settings.topic_prefix).removeprefix("devline-streams-")
            out[name] = sum(ends.values())
        return out
    finally:
        await consumer.stop()


def wait_for_end(settings: Settings, plan_id: str, starts: dict[int, int], quiet: float
                 ) -> None:
    """Block until the plan's PlanCompleted is in devline.events, judged by its headers
    alone: librdkafka reads the log in C and nothing is decoded, so following the run
    costs the two cores it shares little (decoding every event cost 1.0 ms of CPU per
    task, 7% of the run's). It fetches at most twice a second: the figures come from the
    events' own times, so hearing the end late changes none, and a fetch per event cost
    the broker the run shares as much CPU as a client of the run. BenchError if it is
    rejected or the plan is silent `quiet` s."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "bench-follow",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 500,
                         "fetch.min.bytes": 64 * 1024 * 1024})
    topic = settings.topic(T.EVENTS)
    consumer.assign([CTopicPartition(topic, p, o) for p, o in starts.items()])
    wanted, last = plan_id.encode(), time.monotonic()
    try:
        while time.monotonic() - last < quiet:
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error():
                    continue
                headers = dict(msg.headers() or ())
                if headers.get("plan-id") != wanted:
                    continue
                last = time.monotonic()
                kind = headers.get("event-type")
                if kind == b"PlanRejected":
                    raise BenchError("plan rejected")
                if kind == b"PlanCompleted":
                    return
        raise BenchError(f"plan stalled: no event for {quiet:.0f}s")
    finally:
        consumer.close()


async def run_plan(settings: Settings, plan: dict, quiet: float) -> tuple[str, dict[int, int]]:
    """Submit the plan and wait for its PlanCompleted (headers only, in a thread); (its id,
    where devline.events ended before it was submitted)."""
    record = plan_record(plan)
    plan_id = record["plan_id"]
    consumer = await started_consumer(settings)
    try:
        ends = await consumer.end_offsets(await topic_partitions(
            consumer, settings.topic(T.EVENTS)))
    finally:
        await consumer.stop()
    starts = {tp.partition: int(off) for tp, off in ends.items()}
    await produce(settings, T.PLANS, "PlanSubmitted", record, key=plan_id)
    await asyncio.to_thread(wait_for_end, settings, plan_id, starts, quiet)
    return plan_id, starts


async def plan_events(settings: Settings, plan_id: str, starts: dict[int, int]
                      ) -> list[tuple[str, dict]]:
    """The plan's events, then its work items (the work topic is this run's alone)."""
    codec, found = Codec.from_settings(settings), []
    async for r in records(settings, T.EVENTS, start=starts):
        if dict(r.headers or ()).get("plan-id") == plan_id.encode():
            found.append(codec.decode(r.value))
    async for r in records(settings, T.WORK_DEV):
        if r.value is not None:
            found.append(codec.decode(r.value))
    return found


async def devline_rate(settings: Settings, n: int, workers: int, log: Path) -> dict[str, Any]:
    await create_topics(settings)
    with running_pipeline(settings, workers, log) as proc:
        await asyncio.wait_for(wait_until_ready(settings, workers, settle=2.0), 120)
        idle_from, idle_began = cpu_by_role(proc.pid), time.monotonic()
        await asyncio.sleep(IDLE_S)  # what the processes spend with nothing to do
        cpu_before = cpu_by_role(proc.pid)
        idle_s = time.monotonic() - idle_began
        records_before = await records_by_topic(settings)
        began, own_before = time.monotonic(), sum(os.times()[:2])
        plan_id, starts = await asyncio.wait_for(
            run_plan(settings, plan(n, uuid.uuid4().hex[:6]), 60), 600)
        wall = time.monotonic() - began
        cpu_after = cpu_by_role(proc.pid)
        own_ms = (sum(os.times()[:2]) - own_before) * 1000 / n
        events = await plan_events(settings, plan_id, starts)  # after the measured span
        records_after = await records_by_topic(settings)
    cpu_ms = {role: (cpu_after[role] - cpu_before.get(role, 0.0)) * 1000 / n
              for role in sorted(cpu_after)}
    # Net of the idle rate over the run's wall time: a slower run (a busy machine) spends
    # more on timers and polls, which is not work per task.
    net_ms = {role: ms - (cpu_before.get(role, 0.0) - idle_from.get(role, 0.0)) / idle_s
              * wall * 1000 / n for role, ms in cpu_ms.items()}
    per_task = {topic: (count - records_before.get(topic, 0)) / n
                for topic, count in records_after.items()
                if count > records_before.get(topic, 0)}
    dispatched = [v["dispatched_at"] for k, v in events if k == "TaskDispatched"]
    finished = [v["finished_at"] for k, v in events if k == "TaskCompleted"]
    span = (max(finished) - min(dispatched)) / 1000
    return {"tasks": len(finished), "seconds": span, "rate": len(finished) / span,
            "wall_rate": n / wall, "cpu_ms": cpu_ms, "own_ms": own_ms, "net_ms": net_ms,
            "records": per_task, **hops(events)}


def hops(events: list[tuple[str, dict]]) -> dict[str, float]:
    """Mean milliseconds of each hop of a slot's cycle: dispatch logged -> its work item
    sent (the fold reads the dispatch back) -> run started (the item reaches the worker),
    run, result -> the next dispatch to that worker (the dispatcher hears the result and
    pumps; each result paired with the worker's first later dispatch not yet paired)."""
    sent = {v["dispatch_id"]: v["dispatched_at"] for k, v in events
            if k == "TaskDispatched"}
    item = {v["dispatch_id"]: v["dispatched_at"] for k, v in events if k == "WorkItem"}
    runs = [v for k, v in events if k == "TaskCompleted" and v["dispatch_id"] in sent]
    to_item = [item[r["dispatch_id"]] - sent[r["dispatch_id"]] for r in runs
               if r["dispatch_id"] in item]
    to_start = [r["started_at"] - item[r["dispatch_id"]] for r in runs
                if r["dispatch_id"] in item]
    run = [r["finished_at"] - r["started_at"] for r in runs]
    by_worker: dict[str, list[tuple[int, int]]] = {}
    for r in runs:
        by_worker.setdefault(r["worker_id"], []).append((r["finished_at"], 1))
        by_worker[r["worker_id"]].append((sent[r["dispatch_id"]], 0))
    back, finished = [], []
    for marks in by_worker.values():
        for at, is_result in sorted(marks):  # a dispatch at the same ms sorts first
            if is_result:
                finished.append(at)
            elif finished:
                back.append(at - finished.pop(0))
        finished.clear()

    def mean(xs: list[int]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")
    return {"to_item_ms": mean(to_item), "to_start_ms": mean(to_start), "run_ms": mean(run),
            "back_ms": mean(back)}


async def raw_rate(bootstrap: str, n: int, workers: int) -> dict[str, float]:
    prefix = f"bench-raw-{uuid.uuid4().hex[:8]}"
    work, results = f"{prefix}.work", f"{prefix}.results"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(work, 12, 1), NewTopic(results, 1, 1)])
    stop = asyncio.Event()
    done = 0

    async def consumer(i: int) -> None:
        nonlocal done
        c = AIOKafkaConsumer(work, bootstrap_servers=bootstrap, group_id=prefix,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             fetch_max_wait_ms=100, metadata_max_age_ms=1000)
        consumers.append(c)
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
        await c.start()
        await p.start()
        try:
            while not stop.is_set():
                batch = await c.getmany(timeout_ms=100, max_records=1)
                for tp, rs in batch.items():
                    for r in rs:
                        await p.send_and_wait(results, value=r.value)
                        await c.commit({tp: r.offset + 1})
                        done += 1
        finally:
            await c.stop()
            await p.stop()

    consumers: list[AIOKafkaConsumer] = []
    tasks = [asyncio.create_task(consumer(i)) for i in range(workers)]
    # Let the group settle, as devline's run waits for its workers: every partition owned,
    # by every consumer, unchanged for 2 s. (A fixed 3 s sleep could start the clock while
    # a consumer that subscribed before the topic's metadata existed owned nothing: the
    # run then waited out its metadata refresh, minutes, and printed nothing.)
    settled, last, waiting = time.monotonic(), None, time.monotonic()
    while time.monotonic() - settled < 2.0:
        if time.monotonic() - waiting > 60:
            raise BenchError(f"the raw loop's {workers} consumers did not settle in 60 s")
        owned = tuple(sorted(tuple(sorted(tp.partition for tp in c.assignment()))
                             for c in consumers))
        if owned != last or len(consumers) < workers or sum(map(len, owned)) != 12 \
                or not all(owned):
            settled, last = time.monotonic(), owned
        await asyncio.sleep(0.1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    began = time.monotonic()
    for i in range(n):
        await producer.send(work, key=str(i).encode(), value=os.urandom(200))
    await producer.flush()
    while done < n:  # noqa: ASYNC110 - a counter bumped by the consumers
        await asyncio.sleep(0.01)
    span = time.monotonic() - began
    stop.set()
    await asyncio.gather(*tasks)
    await producer.stop()
    await admin.delete_topics([work, results])
    await admin.close()
    return {"tasks": n, "seconds": span, "rate": n / span}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=1000, help="files in the plan (default 1000)")
    ap.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    ap.add_argument("--slots", type=int, default=1,
                    help="concurrent tasks per devline worker (default 1)")
    ap.add_argument("--bootstrap", default=os.environ.get("DEVLINE_BOOTSTRAP", "127.0.0.1:9092"),
                    help="Kafka bootstrap (env DEVLINE_BOOTSTRAP)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="devline-tp-"))
    settings = Settings(bootstrap=args.bootstrap, topic_prefix=f"tp{uuid.uuid4().hex[:8]}.",
                        workspace=tmp / "out", data_dir=tmp / "data", worker_slots=args.slots)
    try:
        ours = asyncio.run(devline_rate(settings, args.tasks, args.workers, tmp / "run.log"))
    except BenchError as exc:
        print(f"devline run failed: {exc} (log {tmp / 'run.log'})")
        return 1
    finally:
        asyncio.run(delete_topics(settings))
    raw = asyncio.run(raw_rate(args.bootstrap, args.tasks, args.workers))
    print(f"\n{args.tasks} zero-duration tasks, {args.workers} workers x {args.slots} slot(s), "
          "one KRaft broker")
    print(f"{'':34} {'tasks/s':>9} {'seconds':>8}")
    print(f"{'devline (dispatch->last result)':34} {ours['rate']:9.1f} {ours['seconds']:8.2f}")
    print(f"{'devline (submit->PlanCompleted)':34} {ours['wall_rate']:9.1f}")
    print(f"{'raw aiokafka consume+produce+commit':34} {raw['rate']:9.1f} {raw['seconds']:8.2f}")
    print(f"devline / raw: {ours['rate'] / raw['rate']:.2f}")
    print(f"a slot's cycle, mean ms: dispatch -> work item sent {ours['to_item_ms']:.1f}, "
          f"-> run starts {ours['to_start_ms']:.1f}, run {ours['run_ms']:.1f}, "
          f"result -> next dispatch {ours['back_ms']:.1f}")
    print("CPU ms per task, submit -> PlanCompleted, by process role: " + ", ".join(
        f"{role} {ms:.2f}" for role, ms in ours["cpu_ms"].items()))
    print(f"  this bench, following the events (not in the figures above): "
          f"{ours['own_ms']:.2f}")
    print(f"  the same net of each role's idle rate (measured {IDLE_S:.0f} s before): " +
          ", ".join(f"{role} {ms:.2f}" for role, ms in ours["net_ms"].items()))
    print(f"records per task ({sum(ours['records'].values()):.2f} in all): " + ", ".join(
        f"{topic} {count:.2f}" for topic, count in ours["records"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
