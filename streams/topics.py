"""The topic catalogue: names, partitions, cleanup policy and retention, created idempotently."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from devline.settings import Settings
from streams.lifecycle import running

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the catalogue. `partitions=None` means the settings' default for its kind."""

    name: str
    doc: str
    kind: str  # "event" (keyed by plan), "work" (keyed by task), "control"
    cleanup: str = "delete"
    retention_ms: int = 7 * DAY_MS
    extra: tuple[tuple[str, str], ...] = ()  # further topic configs

    def partitions(self, settings: Settings) -> int:
        if self.kind == "work":
            return max(settings.work_partitions, 1)
        if self.kind in ("event", "changelog"):
            return settings.event_partitions
        return 1

    def config(self, settings: Settings) -> dict[str, str]:
        return {
            "cleanup.policy": self.cleanup,
            "retention.ms": str(self.retention_ms),
            "max.message.bytes": str(settings.max_message_bytes),
            **dict(self.extra),
        }


PLANS = "devline.plans"
EVENTS = "devline.events"
WORK_DEV = "devline.work.dev"
WORK_TEST = "devline.work.test"
DLQ = "devline.dlq"
ESCALATIONS = "devline.escalations"
ROLLOUTS = "devline.rollouts"
METRICS = "devline.metrics"
OPS = "devline.ops"
WORKERS = "devline.workers"
BOARD = "devline.dispatch"
METRICS_WINDOWS = "devline.metrics.windows"

TABLES = ("plans", "tasks", "cache", "submissions")


def changelog(table: str) -> str:
    """The Faust changelog topic of a table (app id `devline-streams`)."""
    return f"devline-streams-{table}-changelog"


CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec(PLANS, "PlanSubmitted from users and the PM agent", "event", retention_ms=-1),
    TopicSpec(EVENTS, "Every lifecycle event of a plan, in order; replay folds it", "event",
              retention_ms=-1),
    TopicSpec(WORK_DEV, "Dev and fix work handed to workers", "work", retention_ms=3 * DAY_MS),
    TopicSpec(WORK_TEST, "Integration test shards handed to test workers (shard i on "
              "partition i)", "work", retention_ms=3 * DAY_MS),
    TopicSpec(DLQ, "Dead letters: original payload, reason and source in headers", "control",
              retention_ms=30 * DAY_MS),
    TopicSpec(ESCALATIONS, "What the PM agent must decide", "event", retention_ms=-1),
    TopicSpec(ROLLOUTS, "Canary rollouts: every input of the rollout fold and every action "
              "taken (RolloutAction)", "event", retention_ms=-1),
    TopicSpec(METRICS, "Metric points from every component", "control", retention_ms=DAY_MS),
    TopicSpec(OPS, "Ops decisions: reprioritise, scale, pause, rollback", "event",
              retention_ms=-1),
    TopicSpec(WORKERS, "Worker heartbeats: capacity, state, running tasks", "control",
              retention_ms=3600 * 1000),
    TopicSpec(BOARD, "The dispatch board: one entry per task (ready, dispatched, or over), "
              "written by its plan's processor; its one partition elects the dispatcher",
              "control", cleanup="compact", retention_ms=-1,
              # Every processor reads it from the start: roll and compact it often so that
              # is about the live tasks, not every state each one ever had.
              extra=(("segment.ms", str(10 * 60 * 1000)), ("min.cleanable.dirty.ratio", "0.1"),
                     ("delete.retention.ms", str(DAY_MS)))),
    TopicSpec(METRICS_WINDOWS, "Closed metric windows (MetricAggregate), one record per "
              "series and window, written by `devline observe`", "control", cleanup="compact",
              retention_ms=-1),
    # Created up front, co-partitioned with devline.events: if Faust declared them itself
    # it could start before the broker lists them and fail every write (PartitionsMismatch).
    *(TopicSpec(changelog(t), f"Changelog of the {t} table (compacted)", "changelog",
                cleanup="compact", retention_ms=-1) for t in TABLES),
)


def catalogue() -> tuple[TopicSpec, ...]:
    return CATALOGUE


async def create_topics(settings: Settings, specs: tuple[TopicSpec, ...] = CATALOGUE
                        ) -> dict[str, str]:
    """Create every missing topic; return {topic: "created" | "exists"}. Safe to run twice."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_common())
    async with running(admin):
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(spec.name),
                num_partitions=spec.partitions(settings),
                replication_factor=settings.replication,
                topic_configs=spec.config(settings),
            )
            for spec in specs
            if settings.topic(spec.name) not in existing
        ]
        result = {settings.topic(s.name): "exists" for s in specs}
        if wanted:
            response = await admin.create_topics(wanted)
            codes = {name: code for name, code, *_ in getattr(response, "topic_errors", [])}
            for topic in wanted:
                code = codes.get(topic.name, 0)
                if code == 36:  # TOPIC_ALREADY_EXISTS: another process (or stale metadata)
                    continue
                if code != 0:
                    raise RuntimeError(f"could not create topic {topic.name}: error code {code}")
                result[topic.name] = "created"
                log.info("created topic %s (%d partitions)", topic.name, topic.num_partitions)
        return result


async def wait_for_topics(settings: Settings, within: float = 60.0,
                          specs: tuple[TopicSpec, ...] = CATALOGUE) -> None:
    """Until the broker lists every catalogue topic with a leader for each partition: a
    process that joins its consumer group earlier owns no partitions of a missing topic."""
    import asyncio
    import time

    from aiokafka.admin import AIOKafkaAdminClient

    from devline.errors import BrokerUnavailable

    names = [settings.topic(spec.name) for spec in specs]
    deadline = time.monotonic() + within
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_common())
    async with running(admin):
        while True:
            found = await admin.describe_topics(names)
            missing = [d["topic"] for d in found if d.get("error_code") != 0 or any(
                p["leader"] < 0 for p in d.get("partitions") or [])]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"topics not ready after {within:g}s: "
                                        f"{', '.join(missing[:5])} (run `devline topics "
                                        "create`)")
            await asyncio.sleep(0.2)


async def describe_topics(settings: Settings) -> list[dict[str, object]]:
    """Partition counts and catalogue notes for each catalogue topic (missing ones marked)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_common())
    async with running(admin):
        names = [settings.topic(s.name) for s in CATALOGUE]
        # Ask for each topic by name: a fresh client's topic list can lag a creation.
        # A topic whose leader is still being elected (a busy broker, just after creation)
        # exists: only UNKNOWN_TOPIC_OR_PARTITION (3) says it does not.
        found = {d["topic"]: len(d.get("partitions") or [])
                 for d in await admin.describe_topics(names) if d.get("error_code") != 3}
        return [
            {
                "topic": name,
                "exists": name in found,
                "partitions": found.get(name, 0),
                "cleanup": spec.cleanup,
                "retention_ms": spec.retention_ms,
                "doc": spec.doc,
            }
            for name, spec in zip(names, CATALOGUE, strict=True)
        ]


async def delete_prefixed_topics(settings: Settings) -> int:
    """Delete every topic under the settings' prefix (test runs, benchmarks); return how many.

    Refuses an empty prefix: that would be every topic on the cluster.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    if not settings.topic_prefix:
        raise ValueError("refusing to delete topics without a topic prefix")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_common())
    async with running(admin):
        ours = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if ours:
            await admin.delete_topics(ours)
        return len(ours)
