"""A test worker process: runs one shard of a plan's integration tests at a time, reports it.

A `TestShard` names the tests to run and the plan's manifest (every file by hash). The
tester writes those files into a fresh sandbox, runs the tests in a pytest subprocess
(`agents.integration.run_shard`), re-runs each failed test alone to tell flaky from real,
attributes real failures to plan files, and publishes one `IntegrationResult`. The record's
offset is committed only after that result is acknowledged, so a tester killed mid-shard
loses nothing: the shard is redelivered (the fold keeps the first result of a shard).

Testers are a consumer group of their own, assigned round robin so that with W testers
shards 0..W-1 (on partitions 0..W-1) run on W different testers. They never heartbeat on
devline.workers: the dev dispatcher would count them as dev workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from agents.executors.sandbox import check_relative, new_sandbox, remove_sandbox, resolve_inside
from agents.integration import (
    TestOutcome,
    run_shard,
)
from agents.integration.report import ERROR_LOG_TAIL, summary, to_rerun, verdict
from devline.errors import DecodeError, DevlineError, SchemaError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.artifacts import ArtifactError, checked_digest
from streams.emit import dead_letter_headers, headers_for, new_id, now_ms, stored_by_reference
from streams.lifecycle import at_stop, shut, started
from streams.offsets import OffsetBook, commit_finished
from streams.retrying import until_done

R = TypeVar("R")
log = logging.getLogger("devline.tester")

METADATA_AGE_MS = 5000      # see new topics and partitions within seconds
SEEN_REMEMBERED = 10_000    # (run, shard) pairs this process ran: a redelivered copy is dropped
FETCH_CONCURRENCY = 32      # artifact reads in flight while building a sandbox
MAX_RERUNS = 20             # failed tests re-run alone per shard; the rest stay failed
OUTPUT_BUDGET = 1024 * 1024  # failure output per result, shared when many tests fail
class ShardError(DevlineError):
    """A shard that cannot run (its manifest or an artifact is missing or unreadable):
    reported as the result's `error`, not as test failures."""


def write_file(root: Path, relpath: str, data: bytes) -> None:
    """Write `data` at `relpath` inside `root`, never through a symlink."""
    target = resolve_inside(root, relpath)
    target.parent.mkdir(parents=True, exist_ok=True)
    target = resolve_inside(root, relpath)  # a parent that existed could be a symlink
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    with os.fdopen(os.open(target, flags, 0o644), "wb") as fh:
        fh.write(data)


# -- the process ------------------------------------------------------------------------

class TestWorker:
    """One test worker process: one shard at a time."""

    __test__ = False  # not a pytest test class

    def __init__(self, settings: Settings, *, tester_id: str | None = None,
                 grace_s: float = 30.0) -> None:
        self.settings = settings
        self.tester_id = (f"{tester_id}.{os.getpid()}" if tester_id else
                          f"tester-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}")
        self.slot = tester_id  # a static member: a restarted tester takes its partitions back
        self.grace_s = grace_s
        self.revoke_wait_s = 2.0
        self.codec = Codec.from_settings(settings)
        self.store = settings.artifact_store()
        self.offsets = OffsetBook()
        self.running: dict[asyncio.Task[None], tuple[TopicPartition, int]] = {}
        self.partitions: list[int] = []
        self.stopping = asyncio.Event()
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.ran = 0
        self.skipped = 0

    async def run(self) -> None:
        s = self.settings
        # A shard runs, then its failed tests again (within a second time limit) between
        # two polls; leaving the group meanwhile would hand the shard to another tester.
        poll_ms = int((2 * s.test_timeout + 600) * 1000)
        self.producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, linger_ms=0, acks="all",
                                         enable_idempotence=True,
                                         max_request_size=s.max_message_bytes,
                                         metadata_max_age_ms=METADATA_AGE_MS,
                                         **s.kafka_common())
        await started(self.producer)
        # Made once the producer runs: a failed start leaves no client unclosed.
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap, group_id=s.group("devline-testers"),
            enable_auto_commit=False, auto_offset_reset="earliest", group_instance_id=self.slot,
            partition_assignment_strategy=(RoundRobinPartitionAssignor,),
            max_poll_interval_ms=poll_ms, session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000, fetch_max_wait_ms=100,
            metadata_max_age_ms=METADATA_AGE_MS,
            max_partition_fetch_bytes=s.max_message_bytes, **s.kafka_common())
        try:  # the producer is not left open when the consumer fails to start
            await started(self.consumer)
        except BaseException:
            await shut(self.producer)
            raise
        try:
            await self._wait_for_topic(s.topic(T.WORK_TEST))
            self.consumer.subscribe([s.topic(T.WORK_TEST)], listener=_Listener(self))
            await self._loop()
        finally:
            await self._drain()
            await shut(self.consumer)
            await shut(self.producer)
            log.info("tester %s stopped after %d shard(s) (%d duplicate(s) skipped)",
                     self.tester_id, self.ran, self.skipped)

    def stop(self) -> None:
        """Stop taking shards; the running one finishes (or is handed back after the grace)."""
        self.stopping.set()

    async def _wait_for_topic(self, topic: str) -> None:
        """Join only once the broker knows the topic: a consumer that subscribes before
        would own no partitions until its next metadata refresh."""
        assert self.consumer is not None
        waited = 0.0
        while not self.consumer.partitions_for_topic(topic) and not self.stopping.is_set():
            with contextlib.suppress(Exception):
                await self.consumer._client.force_metadata_update()
            if self.consumer.partitions_for_topic(topic):
                break
            if waited in (5.0, 30.0):
                log.warning("tester %s: topic %s not known to the broker yet; waiting",
                            self.tester_id, topic)
            await asyncio.sleep(0.5)
            waited += 0.5

    async def _loop(self) -> None:
        assert self.consumer is not None
        while not self.stopping.is_set():
            if self.running:
                await asyncio.wait(list(self.running), timeout=0.5)
                continue
            if not self.offsets.fetched:
                batch = await self.consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for record in records:
                        self.offsets.fetch(tp, record)
            if self.offsets.fetched:
                tp, record = self.offsets.fetched.popleft()
                task = asyncio.create_task(self._handle(tp, record))
                self.running[task] = (tp, record.offset)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        tp, offset = self.running.pop(task)
        if task.cancelled():
            return  # handed back: not committed, redelivered to the partition's next owner
        if task.exception() is not None:
            log.error("shard at %s@%d could not be reported: %r", tp, offset, task.exception())
            return  # uncommitted: redelivered rather than lost
        self.offsets.finished(tp, offset)
        asyncio.get_running_loop().create_task(self.commit())

    async def commit(self) -> None:
        """Commit, per partition, past the longest run of finished offsets."""
        assert self.consumer is not None
        await commit_finished(self.consumer, self.offsets, "shards")

    async def _drain(self) -> None:
        if self.running:
            log.info("tester %s finishing its shard (grace %.0fs)", self.tester_id,
                     self.grace_s)
            _, late = await asyncio.wait(list(self.running), timeout=self.grace_s)
            for task in late:
                task.cancel()  # run_shard kills the pytest process group
            if late:
                await asyncio.wait(late)
        await at_stop(self.commit(), "committing the finished shards", log)

    # -- one shard --------------------------------------------------------------------
    async def _handle(self, tp: TopicPartition, record: Any) -> None:
        try:
            event_type, shard = self.codec.decode(record.value or b"")
            if event_type != "TestShard":
                raise DecodeError(f"expected TestShard, got {event_type}")
        except (DecodeError, SchemaError) as exc:
            await self._dead_letter(tp, record, f"undecodable test shard: {exc}")
            return
        key = f"{shard['run_id']}/{shard['shard']}"
        if key in self.seen:
            self.skipped += 1
            log.info("shard %d/%d of plan %s run %s: already ran here; skipped",
                     shard["shard"] + 1, shard["shards"], shard["plan_id"], shard["run_id"])
            return
        log.info("shard %d/%d of plan %s run %s: %d test(s) on %s", shard["shard"] + 1,
                 shard["shards"], shard["plan_id"], shard["run_id"], len(shard["tests"]),
                 self.tester_id)
        started = time.monotonic()
        outcome = await self._run(shard)
        result = {
            "event_id": new_id(), "plan_id": shard["plan_id"], "run_id": shard["run_id"],
            "shard": shard["shard"], "shards": shard["shards"], "round": shard["round"],
            **outcome, "duration_ms": int((time.monotonic() - started) * 1000),
            "worker_id": self.tester_id, "at": now_ms()}
        await self._report(result)
        self.seen[key] = None
        while len(self.seen) > SEEN_REMEMBERED:
            self.seen.popitem(last=False)
        self.ran += 1
        log.info("%s", summary(result))

    def _env(self) -> dict[str, str]:
        """The plan's tests do not get the pytest plugins installed where devline runs
        (they are devline's, not the project's, and cost ~0.6 s per pytest start) unless
        the operator asks for them."""
        return {} if self.settings.test_plugins else {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

    async def _run(self, shard: Mapping[str, Any]) -> dict[str, Any]:
        """Build the sandbox, run the tests, re-run the failed ones: the verdict."""
        timeout = self.settings.test_timeout
        root = await asyncio.to_thread(new_sandbox, "shard")  # devline-shard-*
        try:
            plan_files = await self._materialise(shard["files_ref"], root)
            env = self._env()
            first = await run_shard(root, shard["tests"], timeout_s=timeout, env=env)
            reruns: dict[str, TestOutcome | None] = {}
            deadline = time.monotonic() + timeout  # all reruns together: one more limit
            for outcome in to_rerun(first)[:MAX_RERUNS]:
                left = deadline - time.monotonic()
                if left <= 1:
                    break  # not proven flaky: stays failed
                again = await run_shard(root, [outcome.test_id], timeout_s=left, env=env)
                reruns[outcome.test_id] = next(
                    (o for o in again.outcomes if o.test_id == outcome.test_id), None)
            return verdict(first, reruns, plan_files)
        except (DevlineError, OSError) as exc:  # e.g. a test id or path leaving the sandbox
            log.warning("shard %d/%d of plan %s run %s cannot run: %s", shard["shard"] + 1,
                        shard["shards"], shard["plan_id"], shard["run_id"], exc)
            return {"passed": False, "failed_tests": [], "implicated_files": [],
                    "flaky_tests": [], "failures": [], "durations": {}, "tests": 0,
                    "command": "", "error": str(exc)[:ERROR_LOG_TAIL]}
        finally:
            await asyncio.to_thread(remove_sandbox, root)

    async def _materialise(self, files_ref: str, root: Path) -> list[str]:
        """Write every file of the manifest under `root`; return their paths."""
        raw = await self._artifact(files_ref, "the manifest")
        try:
            files = json.loads(raw)["files"]
            if not isinstance(files, dict) or not all(
                    isinstance(p, str) and isinstance(d, str) for p, d in files.items()):
                raise TypeError("'files' is not a map of paths to hashes")
        except (ValueError, KeyError, TypeError) as exc:
            raise ShardError(f"unreadable manifest {files_ref}: {exc}") from exc
        for path in files:
            check_relative(path)
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(path: str, digest: str) -> str | None:
            async with gate:
                try:
                    data = await self._artifact(digest, path)
                    await asyncio.to_thread(write_file, root, path, data)
                except (DevlineError, OSError) as exc:
                    return str(exc)
                return None

        problems = [p for p in await asyncio.gather(*(one(p, d) for p, d in files.items()))
                    if p]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ShardError("; ".join(problems[:3]) + more)
        return sorted(files)

    async def _artifact(self, digest: str, what: str) -> bytes:
        """The stored bytes of `digest`; ShardError when it is not there or not them."""
        try:
            checked_digest(digest)
        except ArtifactError as exc:
            raise ShardError(f"{what}: {exc}") from exc
        data = await self._retried(f"reading {what} ({digest[:12]})",
                                   lambda: self.store.get(digest))
        if data is None:
            raise ShardError(f"{what}: artifact {digest} is not in the artifact store")
        if hashlib.sha256(data).hexdigest() != digest:
            raise ShardError(f"{what}: artifact {digest} does not match its hash")
        return data

    async def _report(self, record: dict[str, Any]) -> None:
        assert self.producer is not None
        producer, value = self.producer, self._encoded(record)
        await self._retried(
            f"reporting shard {record['shard']} of {record['plan_id']}",
            lambda: producer.send_and_wait(
                self.settings.topic(T.EVENTS), key=record["plan_id"].encode(), value=value,
                headers=headers_for("IntegrationResult", record)))

    def _encoded(self, record: dict[str, Any]) -> bytes:
        """The result's bytes; over the size limit, without outputs and durations."""
        try:
            return self.codec.encode("IntegrationResult", record)
        except SchemaError as exc:
            log.warning("shard %s of plan %s: result too big (%s); sent without outputs",
                        record["shard"], record["plan_id"], exc)
            slim = [{**f, "output": "", "message": f["message"][:200]}
                    for f in record["failures"]]
            return self.codec.encode("IntegrationResult",
                                     {**record, "failures": slim, "durations": {}})

    async def _dead_letter(self, tp: TopicPartition, record: Any, reason: str) -> None:
        assert self.producer is not None
        log.warning("dead-lettering %s[%s]@%s: %s", tp.topic, tp.partition, record.offset,
                    reason)
        headers = dead_letter_headers(reason, topic=tp.topic, partition=tp.partition,
                                      offset=record.offset)
        letter = await self._retried("storing a dead letter", lambda: stored_by_reference(
            self.store, record.value, record.key, headers))
        producer = self.producer
        await self._retried("sending a dead letter", lambda: producer.send_and_wait(
            self.settings.topic(T.DLQ), key=letter.key, value=letter.value,
            headers=letter.headers))

    @staticmethod
    async def _retried(what: str, step: Callable[[], Awaitable[R]]) -> R:
        """Our own failure (the broker or the store away) is retried until it passes."""
        return await until_done(what, step, log)


class _Listener(ConsumerRebalanceListener):
    """Commit what finished before partitions go; a shard already running goes on (its
    result is as good as the next owner's, and the fold keeps the first)."""

    def __init__(self, tester: TestWorker) -> None:
        self.tester = tester

    async def on_partitions_revoked(self, revoked: Any) -> None:
        t = self.tester
        gone = set(revoked)
        t.offsets.revoke(gone, set(t.running.values()))
        losing = [task for task, (tp, _) in t.running.items() if tp in gone]
        if losing:
            await asyncio.wait(losing, timeout=t.revoke_wait_s)
        await t.commit()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        t = self.tester
        if t.consumer is not None:
            for tp, offset in t.offsets.resume_points(set(assigned)).items():
                t.consumer.seek(tp, offset)
        t.partitions = sorted(tp.partition for tp in assigned)
        log.info("tester %s owns partitions %s", t.tester_id, t.partitions)


async def run_tester(settings: Settings, **kwargs: Any) -> None:
    """Run one test worker until SIGTERM/SIGINT, then finish its shard and exit."""
    import signal

    tester = TestWorker(settings, **kwargs)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, tester.stop)
    log.info("tester %s starting", tester.tester_id)
    started = time.monotonic()
    await tester.run()
    log.info("tester %s ran %.1fs", tester.tester_id, time.monotonic() - started)
