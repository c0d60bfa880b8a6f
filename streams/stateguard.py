"""Local table stores that no longer match Kafka are deleted before a processor starts.

A processor's RocksDB databases (`<data_dir>/<prefix>/faust/...`) are a cache of the
table changelogs: each holds the changelog offset it applied. When the changelogs they
came from are gone (another broker at the same address, a wiped local broker, changelog
topics deleted and created again), a database says it applied offset 15 of a changelog
whose end is 0, and Faust stops the processor with a ConsistencyError on every start:
a crash loop that only deleting the folder ends. As Kafka Streams does with a state store
whose checkpoint is ahead of its changelog, the guard deletes such databases, says so,
and the processor rebuilds them from the changelogs, which are the truth.

Two checks, before Faust opens anything:
- the Kafka cluster id the stores were built from (`cluster-id` in the folder): another
  cluster, and the whole folder goes;
- each database's applied offset against its changelog partition's end offset: one
  ahead of the end goes.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from devline.settings import Settings
from streams import topics as T
from streams.lifecycle import running

log = logging.getLogger("devline.stateguard")

DB_NAME = re.compile(r"(?P<table>.+)-(?P<partition>\d+)\.db")


@dataclass
class Verdict:
    """What the guard found and deleted."""

    cluster_changed: bool = False
    deleted: list[Path] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def stores_dir(settings: Settings) -> Path:
    """Where the processors of this machine and prefix keep their table stores (one
    folder per instance inside)."""
    return settings.data_dir / (settings.topic_prefix or "default") / "faust"


def stale_databases(dbs: dict[Path, tuple[str, int, int | None]],
                    ends: dict[tuple[str, int], int]) -> list[tuple[Path, str]]:
    """The databases whose applied offset is past their changelog partition's end.

    `dbs`: path -> (table, partition, applied offset or None); `ends`: (table, partition)
    -> the changelog partition's end offset (the next offset to be written)."""
    stale = []
    for path, (table, partition, applied) in sorted(dbs.items()):
        end = ends.get((table, partition))
        if applied is None or end is None:
            continue
        if applied >= end:  # it applied a record the changelog does not hold
            stale.append((path, f"{path.name} applied offset {applied} of "
                                f"{table}-changelog[{partition}], whose end is {end}"))
    return stale


def read_applied(path: Path) -> int | None:
    """The changelog offset a database applied, read without taking its lock; None when
    it cannot be read (the processor's own recovery then decides)."""
    try:
        from rocksdict import AccessType, Options, Rdict

        from streams.edge.state import RocksStore
    except ImportError:  # the memory store: nothing on disk
        return None
    try:  # raw mode, as the store writes
        db = Rdict(str(path), options=Options(raw_mode=True),
                   access_type=AccessType.read_only())
    except Exception:  # being written, or damaged: not ours to judge
        return None
    try:
        raw = db.get(RocksStore.offset_key)
    finally:
        db.close()
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def local_databases(root: Path) -> dict[Path, tuple[str, int, int | None]]:
    found: dict[Path, tuple[str, int, int | None]] = {}
    for path in root.glob("*/v*/tables/*.db"):
        m = DB_NAME.fullmatch(path.name)
        if m and m["table"] in T.TABLES and path.is_dir():
            found[path] = (m["table"], int(m["partition"]), read_applied(path))
    return found


async def check(settings: Settings) -> Verdict:
    """Delete the local stores that do not match the cluster's changelogs; say why."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    verdict = Verdict()
    root = stores_dir(settings)
    marker = root / "cluster-id"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_common())
    async with running(admin):
        cluster = str((await admin.describe_cluster()).get("cluster_id") or "")
    known = marker.read_text().strip() if marker.exists() else ""
    if known and cluster and known != cluster:
        verdict.cluster_changed = True
        verdict.reasons.append(f"the stores were built from Kafka cluster {known}; "
                               f"{settings.bootstrap} is cluster {cluster}")
        verdict.deleted.append(root)
        shutil.rmtree(root, ignore_errors=True)
    dbs = local_databases(root) if root.exists() else {}
    if dbs:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap,
                                    enable_auto_commit=False, **settings.kafka_common())
        async with running(consumer):
            tps = {TopicPartition(settings.topic(T.changelog(table)), partition): (table, partition)
                   for table, partition, _ in dbs.values()}
            known_topics = await consumer.topics()
            wanted = [tp for tp in tps if tp.topic in known_topics]
            found = await consumer.end_offsets(wanted) if wanted else {}
        ends = {tps[tp]: end for tp, end in found.items()}
        # A changelog that is gone altogether ends at 0: everything applied from it is stale.
        ends.update({tps[tp]: 0 for tp in tps if tp.topic not in known_topics})
        for path, why in stale_databases(dbs, ends):
            verdict.deleted.append(path)
            verdict.reasons.append(why)
            shutil.rmtree(path, ignore_errors=True)
    if cluster:
        root.mkdir(parents=True, exist_ok=True)
        marker.write_text(cluster + "\n")
    if verdict.deleted:
        log.warning("local table stores that do not match Kafka were deleted (%s): %s; the "
                    "processor rebuilds them from the changelogs",
                    len(verdict.deleted), "; ".join(verdict.reasons[:5]))
    return verdict
