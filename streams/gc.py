"""`devline gc`: mark and sweep of the artifact store.

Mark: the digests the live state still needs, read from the compacted changelogs of the
live tables (`plans`, `tasks`, `cache`, `submissions`: the latest value per partition and
key, tombstones delete) and from the dead letters' `dlq-*-ref` headers. Refs are judged
next: a ref lives while its cache entry does (or a live task names it), while it is a
project's test-duration record or the read side's snapshot, or while it is younger than
the grace; a live ref's target lives too. Sweep: every object that is not live and is
older than the grace is deleted (old snapshots among them). The grace covers what a
worker stored and the processor has not folded yet; the store renews an object's age when
it is stored again (`artifacts.TOUCH_AFTER_S`).

A ref deleted in a run keeps its target for that run: a cache lookup that read the ref
just before may complete a task with it, and the next run sees that task in the tables.

The marking is pure (`Marker`, `judge_refs`, `judge_objects`); the edges read Kafka and
the store. A changelog that cannot be read to its end stops the run: an incomplete live
set would delete live contents.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar, runtime_checkable

from aiokafka import AIOKafkaConsumer, TopicPartition

from devline.errors import BrokerUnavailable, DevlineError
from devline.settings import Settings
from streams import topics as T
from streams.artifacts import Stored
from streams.edge.integrating import durations_ref
from streams.emit import REF_SCHEME, ref_headers
from streams.lifecycle import running
from streams.observe.snapshot import snapshot_ref

HEX64 = re.compile(r"[0-9a-f]{64}")
READ_TIMEOUT_S = 300.0     # a changelog not read to its end by then stops the run
STORE_CONCURRENCY = 16     # store calls in flight (ref reads, deletes)
SNIFF_MAX = 4 * 1024 * 1024  # largest ref target read to tell a test-duration record
MIN_GRACE_S = 2 * 3600.0   # the CLI's floor: twice the store's TOUCH_AFTER_S

# Why a digest is live (the report counts by reason).
TASK_OUTPUT, BRIEF, FIX_BASE, FIX_VERSION, FAILED_VERSION = (
    "task output", "brief", "fix base", "fix history", "failed version")
CACHE_ENTRY, OTHER_FIELD, DEAD_LETTER = "cache entry", "other table field", "dead letter"
CACHE_REF, TASK_REF, DURATIONS_REF, YOUNG_REF, SNAPSHOT_REF = (
    "cache ref", "ref of a live task", "test durations", "young ref", "read-side snapshot")
DELETED_REF_TARGET = "target of a ref deleted in this run"


class GcError(DevlineError):
    """The collector cannot know the live set (a changelog or the DLQ unreadable to its
    end, a value it cannot decode): nothing is deleted."""


@runtime_checkable
class Collectable(Protocol):
    """What the collector needs of a store (both `streams.artifacts` stores have it)."""

    async def get(self, digest: str) -> bytes | None: ...

    async def get_ref(self, name: str) -> str | None: ...

    async def objects(self) -> list[Stored]: ...

    async def refs(self) -> list[Stored]: ...

    async def delete(self, digest: str, *, unless_since_ms: int | None = None) -> bool: ...

    async def delete_ref(self, name: str, *, unless_since_ms: int | None = None) -> bool: ...


def collectable(settings: Settings) -> Collectable:
    """The settings' artifact store, as the collector uses it."""
    store = settings.artifact_store()
    if not isinstance(store, Collectable):
        raise GcError(f"the artifact store {type(store).__name__} cannot list or delete")
    return store


# -- mark (pure) --------------------------------------------------------------------------
def decode_key(raw: bytes | None) -> str:
    """A table key as Faust wrote it (JSON, so a str key is quoted)."""
    text = (raw or b"").decode("utf-8", "replace")
    if text.startswith('"'):
        try:
            return str(json.loads(text))
        except ValueError:
            pass
    return text


def _digest(value: Any) -> str | None:
    return value if isinstance(value, str) and HEX64.fullmatch(value) else None


def hashes_in(value: Any) -> Iterator[str]:
    """Every sha256-looking string anywhere in a table value: a field added later that
    names a content is kept, not collected (the collector errs on keeping)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif _digest(v):
            yield v


def value_marks(table: str, value: Any) -> dict[str, str]:
    """The digests one live table value needs, each with why."""
    found: dict[str, str] = {}
    if not isinstance(value, dict):
        return found

    def add(digest: Any, why: str) -> None:
        if _digest(digest) and digest not in found:
            found[digest] = why

    if table == "tasks":
        add(value.get("content_hash"), TASK_OUTPUT)
        add((value.get("spec") or {}).get("brief"), BRIEF)
        add((value.get("fix_base") or {}).get("content_hash"), FIX_BASE)
        for version in value.get("fixes") or ():
            if isinstance(version, dict):
                add(version.get("content_hash"), FIX_VERSION)
        add((value.get("last_failure") or {}).get("content_hash"), FAILED_VERSION)
    elif table == "cache":
        add(value.get("content_hash"), CACHE_ENTRY)
    for digest in hashes_in(value):
        add(digest, OTHER_FIELD)
    return found


@dataclass
class Entry:
    """What the collector keeps of one live table record."""

    marks: dict[str, str]
    project: str | None = None
    cache_key: str | None = None  # a task's cache key (a ref name)


@dataclass
class Live:
    """The live set: digests with why, the ref names live cache entries and tasks hold,
    and the projects whose test-duration records are kept."""

    objects: dict[str, str] = field(default_factory=dict)
    cache_keys: set[str] = field(default_factory=set)
    task_refs: set[str] = field(default_factory=set)
    projects: set[str] = field(default_factory=set)
    snapshots: set[str] = field(default_factory=set)  # refs of the read side's snapshots
    records: Counter[str] = field(default_factory=Counter)  # live records per table

    def need(self, digest: str, why: str) -> None:
        self.objects.setdefault(digest, why)

    def ref_names(self) -> dict[str, str]:
        names = {durations_ref(p): DURATIONS_REF for p in self.projects}
        names.update({k: TASK_REF for k in self.task_refs})
        names.update({k: CACHE_REF for k in self.cache_keys})
        names.update({k: SNAPSHOT_REF for k in self.snapshots})
        return names


class Marker:
    """Folds changelog records (partition, key, value bytes or None) into the live set:
    the latest value per partition and key counts, a tombstone deletes. A key live in any
    partition is live (a cache key can be written from plans of several partitions)."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[tuple[int, str], Entry]] = {}

    def add(self, table: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        entries = self.latest.setdefault(table, {})
        name = decode_key(key)
        if value is None:
            entries.pop((partition, name), None)
            return
        try:
            decoded = json.loads(value)
        except ValueError as exc:
            raise GcError(f"changelog of {table!r}: the value of {name[:80]!r} (partition "
                          f"{partition}) is not JSON ({exc}): cannot tell what it needs; "
                          "nothing deleted") from exc
        entry = Entry(value_marks(table, decoded))
        if isinstance(decoded, dict):
            if table == "plans" and isinstance(decoded.get("project"), str):
                entry.project = decoded["project"]
            if table == "tasks":
                entry.cache_key = _digest(decoded.get("cache_key"))
        entries[(partition, name)] = entry

    def live(self) -> Live:
        out = Live()
        for table, entries in self.latest.items():
            out.records[table] = len(entries)
            for (_, name), entry in entries.items():
                for digest, why in entry.marks.items():
                    out.need(digest, why)
                if table == "cache" and _digest(name):
                    out.cache_keys.add(name)
                if entry.project is not None:
                    out.projects.add(entry.project)
                if entry.cache_key is not None:
                    out.task_refs.add(entry.cache_key)
        return out


def dead_letter_refs(headers: Iterable[tuple[str, bytes]]) -> list[str]:
    """Digests a dead letter's headers refer to (`dlq-value-ref`, `dlq-key-ref`)."""
    wanted = {ref_headers("value")[0], ref_headers("key")[0]}
    found = []
    for name, raw in headers or ():
        text = raw.decode("ascii", "replace") if name in wanted else ""
        if text.startswith(REF_SCHEME) and _digest(text[len(REF_SCHEME):]):
            found.append(text[len(REF_SCHEME):])
    return found


def looks_like_durations(data: bytes) -> bool:
    """A project's test-duration record: a JSON object of test id -> seconds."""
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and bool(doc) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in doc.values())


@dataclass
class RefVerdict:
    kept: dict[str, str]         # ref name -> why
    targets: dict[str, str]      # digest a kept ref points at -> why
    doomed: list[Stored]         # refs to delete (unless they turn out to be durations)


def judge_refs(live: Live, refs: Iterable[tuple[Stored, str | None]], now_ms: int,
               grace_ms: int) -> RefVerdict:
    names = live.ref_names()
    verdict = RefVerdict({}, {}, [])
    for ref, target in refs:
        why = names.get(ref.name) or (YOUNG_REF if ref.modified_ms > now_ms - grace_ms
                                      else None)
        if why is None:
            verdict.doomed.append(ref)
            continue
        verdict.kept[ref.name] = why
        if target:
            verdict.targets.setdefault(target, why)
    return verdict


@dataclass
class ObjectVerdict:
    kept: Counter[str]   # why -> objects
    kept_bytes: int
    doomed: list[Stored]


def judge_objects(live: Mapping[str, str], objects: Iterable[Stored], now_ms: int,
                  grace_ms: int) -> ObjectVerdict:
    verdict = ObjectVerdict(Counter(), 0, [])
    for obj in objects:
        why = live.get(obj.name) or ("young" if obj.modified_ms > now_ms - grace_ms else None)
        if why is None:
            verdict.doomed.append(obj)
        else:
            verdict.kept[why] += 1
            verdict.kept_bytes += obj.size
    return verdict


# -- reading the live set from Kafka ------------------------------------------------------
Record = Any  # an aiokafka ConsumerRecord


async def read_to_end(settings: Settings, topic: str, on_record: Callable[[Record], None],
                      timeout_s: float = READ_TIMEOUT_S) -> int:
    """Feed every record of `topic` (full name) up to the end offsets seen at the start,
    partition by partition in offset order; GcError when the topic is missing or not read
    to its end within `timeout_s`, BrokerUnavailable when no broker answers. Returns the
    records read."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=settings.max_message_bytes,
                                fetch_max_wait_ms=100, **settings.kafka_common())

    def unreachable(exc: Exception) -> BrokerUnavailable:  # the CLI probes and says why
        return BrokerUnavailable(f"no Kafka broker at {settings.bootstrap}: cannot read "
                                 f"{topic}; nothing deleted")

    async with running(consumer, failed=unreachable):
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise GcError(f"topic {topic} does not exist: without it the live set is "
                          "unknown (has a processor run with this topic prefix?); nothing "
                          "deleted")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            behind = [tp for tp in tps if ends[tp] > 0 and await consumer.position(tp) < ends[tp]]
            if not behind:
                return seen
            if time.monotonic() > deadline:
                at = [(tp.partition, await consumer.position(tp), ends[tp]) for tp in behind]
                where = ", ".join(f"[{p}] at {pos} of {end}" for p, pos, end in at)
                raise GcError(f"could not read {topic} to its end within {timeout_s:.0f}s "
                              f"({where}); nothing deleted")
            batch = await consumer.getmany(*behind, timeout_ms=500)
            for tp, recs in batch.items():
                for r in recs:
                    if r.offset < ends[tp]:
                        on_record(r)
                        seen += 1


async def mark(settings: Settings, timeout_s: float = READ_TIMEOUT_S) -> tuple[Live, int]:
    """The live set from the tables' changelogs and the DLQ; (live, records read)."""
    marker = Marker()
    letters: list[str] = []

    def table_reader(table: str) -> Callable[[Record], None]:
        return lambda r: marker.add(table, r.partition, r.key, r.value)

    reads = [read_to_end(settings, settings.topic(T.changelog(t)), table_reader(t), timeout_s)
             for t in T.TABLES]
    reads.append(read_to_end(settings, settings.topic(T.DLQ),
                             lambda r: letters.extend(dead_letter_refs(r.headers)), timeout_s))
    counts = await asyncio.gather(*reads)
    live = marker.live()
    for digest in letters:
        live.need(digest, DEAD_LETTER)
    live.snapshots.add(snapshot_ref(settings.topic_prefix))  # its target is kept with it
    return live, sum(counts)


# -- sweep ----------------------------------------------------------------------------------
@dataclass
class Report:
    dry_run: bool
    grace_s: float
    records_read: int = 0
    live: dict[str, int] = field(default_factory=dict)    # why -> live digests
    objects: int = 0
    object_bytes: int = 0
    kept: dict[str, int] = field(default_factory=dict)    # why -> objects kept
    kept_bytes: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    skipped: int = 0  # stored again (or gone) between the listing and the delete
    refs: int = 0
    refs_kept: dict[str, int] = field(default_factory=dict)
    refs_deleted: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_T = TypeVar("_T")


async def _bounded(calls: Iterable[Callable[[], Awaitable[_T]]]) -> list[_T]:
    gate = asyncio.Semaphore(STORE_CONCURRENCY)

    async def one(call: Callable[[], Awaitable[_T]]) -> _T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def sweep(store: Collectable, live: Live, *, grace_s: float, dry_run: bool,
                now_ms: int | None = None, report: Report | None = None) -> Report:
    """Delete the refs and objects the live set does not need (or count them: dry run)."""
    report = report or Report(dry_run, grace_s)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    grace_ms = int(grace_s * 1000)
    cutoff = now - grace_ms  # a thing modified since was stored again: someone needs it
    t0 = time.monotonic()
    refs = await store.refs()
    targets = await _bounded([partial(store.get_ref, r.name) for r in refs])
    verdict = judge_refs(live, zip(refs, targets, strict=True), now, grace_ms)
    by_name = dict(zip((r.name for r in refs), targets, strict=True))
    objects = await store.objects()
    sizes = {o.name: o.size for o in objects}
    doomed: list[Stored] = []
    for ref in verdict.doomed:  # a project's durations whose plans all retired: kept
        target = by_name.get(ref.name)
        data = await store.get(target) if target and sizes.get(target, 0) <= SNIFF_MAX \
            else None
        if data is not None and looks_like_durations(data):
            verdict.kept[ref.name] = DURATIONS_REF
            verdict.targets.setdefault(str(target), DURATIONS_REF)
        else:
            doomed.append(ref)
    report.seconds["refs"] = time.monotonic() - t0
    needed = dict(verdict.targets)
    needed.update(live.objects)
    for ref in doomed:
        target = by_name.get(ref.name)
        if target:
            needed.setdefault(target, DELETED_REF_TARGET)
    judged = judge_objects(needed, objects, now, grace_ms)
    t1 = time.monotonic()
    if not dry_run:
        gone = await _bounded([partial(store.delete_ref, r.name, unless_since_ms=cutoff)
                               for r in doomed])
        report.refs_deleted = sum(gone)
        done = await _bounded([partial(store.delete, o.name, unless_since_ms=cutoff)
                               for o in judged.doomed])
        report.deleted = sum(done)
        report.deleted_bytes = sum(o.size for o, d in zip(judged.doomed, done, strict=True) if d)
        report.skipped = len(done) - report.deleted
    else:
        report.refs_deleted = len(doomed)
        report.deleted = len(judged.doomed)
        report.deleted_bytes = sum(o.size for o in judged.doomed)
    report.seconds["delete"] = time.monotonic() - t1
    report.refs = len(refs)
    report.refs_kept = dict(Counter(verdict.kept.values()))
    report.objects = len(objects)
    report.object_bytes = sum(sizes.values())
    report.kept = dict(judged.kept)
    report.kept_bytes = judged.kept_bytes
    return report


async def collect(settings: Settings, store: Collectable, *, grace_s: float, dry_run: bool,
                  timeout_s: float = READ_TIMEOUT_S) -> Report:
    """Mark from Kafka, then sweep the store."""
    report = Report(dry_run, grace_s)
    t0 = time.monotonic()
    live, report.records_read = await mark(settings, timeout_s)
    report.seconds["mark"] = time.monotonic() - t0
    report.live = dict(Counter(live.objects.values()))
    await sweep(store, live, grace_s=grace_s, dry_run=dry_run, report=report)
    report.seconds["total"] = time.monotonic() - t0
    return report
