"""`devline reset`: the stream processors' application reset (Kafka Streams' reset tool).

What a prefix's processors keep, and what a reset does with it:

- consumer group `devline-streams` (the processors): its offsets on `devline.plans` and
  `devline.events` go to the earliest offsets (`--to-earliest`) or to the first record at
  or after a time (`--to-datetime`);
- the tables' changelogs (`plans`, `tasks`, `cache`) and the dispatch board (derived
  state, rebuilt by folding the log again): deleted and created empty, with `--to-earliest`
  only; the dispatcher's group (`devline-dispatcher`) is set back to the board's start;
- this machine's table stores (`<data_dir>/<prefix>/faust`): deleted with them;
- the planner's decisions (`submissions` changelog) are kept: they are what makes reading
  `devline.plans` again accept nothing twice (a submission decided before is a no-op).

`--to-datetime` keeps the state: every table record carries the log position of the last
event applied to it, so events read again are no-ops for the state and redo only
idempotent effects (what redelivery after a crash does). Clearing the state there would
rebuild plans from the middle of their history.

It refuses while either group has members: a running processor would write the state
being cleared.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devline.errors import DevlineError
from devline.settings import Settings
from streams import topics as T
from streams.lifecycle import running
from streams.stateguard import stores_dir

GROUP = "devline-streams"
DISPATCHER = "devline-dispatcher"
INPUTS = (T.PLANS, T.EVENTS)
CLEARED = (*(T.changelog(t) for t in ("plans", "tasks", "cache")), T.BOARD)
KEPT = T.changelog("submissions")


class ResetRefused(DevlineError):
    """A reset that would race running processors, or cannot be done as asked."""


@dataclass
class ResetPlan:
    """What a reset does, in order; `describe()` is what --dry-run prints."""

    prefix: str
    mode: str                      # earliest | datetime
    at_ms: int | None
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)  # topic -> partition -> offset
    current: dict[str, dict[int, int | None]] = field(default_factory=dict)
    clear: list[str] = field(default_factory=list)   # topics to delete and create empty
    dirs: list[Path] = field(default_factory=list)   # local state to delete
    members: dict[str, list[str]] = field(default_factory=dict)  # running group members

    def describe(self, settings: Settings) -> list[str]:
        lines = [f"reset of prefix {self.prefix or '(none)'} "
                 + ("to the earliest offsets" if self.mode == "earliest"
                    else f"to {self.at_ms} ms (first record at or after it)")]
        group = settings.group(GROUP)
        for topic, parts in sorted(self.offsets.items()):
            now = self.current.get(topic, {})
            moves = ", ".join(f"p{p}: {'none' if now.get(p) is None else now[p]} -> {o}"
                              for p, o in sorted(parts.items()))
            lines.append(f"set offsets of group {group} on {topic}: {moves or 'no partitions'}")
        for topic in self.clear:
            lines.append(f"delete topic {topic} and create it empty (same partitions and "
                         "configuration)")
        if self.clear:
            lines.append(f"set offsets of group {settings.group(DISPATCHER)} on "
                         f"{settings.topic(T.BOARD)} to 0")
        for d in self.dirs:
            lines.append(f"delete local table store {d}" + ("" if d.exists() else
                                                            " (not on this machine)"))
        if self.mode == "earliest":
            lines.append(f"keep {settings.topic(KEPT)}: the planner's decisions, so "
                         "submissions read again are accepted nothing twice")
            lines.append("processors on other machines: delete their "
                         "<data_dir>/<prefix>/faust before they start again")
        else:
            lines.append("keep the tables, their changelogs and the board: events read "
                         "again are no-ops for the state (each record knows the last event "
                         "applied to it); only idempotent effects are redone")
        return lines


async def _members(admin: Any, group: str) -> list[str]:
    found: list[str] = []
    for resp in await admin.describe_consumer_groups([group]):
        for g in resp.groups:
            for m in g[5] if len(g) > 5 else []:
                strings = [x for x in m if isinstance(x, str) and x]
                found.append(" ".join(strings[:1] + strings[-2:]))
    return found


async def plan_reset(settings: Settings, *, to_earliest: bool, at_ms: int | None
                     ) -> ResetPlan:
    """Look at the broker (groups, offsets, topics) and say what the reset would do."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    if to_earliest == (at_ms is not None):
        raise ResetRefused("give one of --to-earliest and --to-datetime")
    plan = ResetPlan(settings.topic_prefix, "earliest" if to_earliest else "datetime", at_ms)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_common())
    async with running(admin):
        for name in (GROUP, DISPATCHER):
            plan.members[settings.group(name)] = await _members(admin, settings.group(name))
        committed = await admin.list_consumer_group_offsets(settings.group(GROUP))
        existing = set(await admin.list_topics())
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                **settings.kafka_common())
    async with running(consumer):
        for name in INPUTS:
            topic = settings.topic(name)
            parts = sorted(consumer.partitions_for_topic(topic) or []) if topic in existing \
                else []
            if topic in existing and not parts:
                await consumer._client.force_metadata_update()
                parts = sorted(consumer.partitions_for_topic(topic) or [])
            tps = [TopicPartition(topic, p) for p in parts]
            if not tps:
                continue
            if to_earliest:
                found = await consumer.beginning_offsets(tps)
                target = {tp.partition: off for tp, off in found.items()}
            else:
                ends = await consumer.end_offsets(tps)
                times = await consumer.offsets_for_times({tp: at_ms for tp in tps})
                target = {tp.partition: (t.offset if t is not None else ends[tp])
                          for tp, t in times.items()}
            plan.offsets[topic] = target
            plan.current[topic] = {
                tp.partition: (committed[tp].offset if tp in committed else None)
                for tp in tps}
    if to_earliest:
        plan.clear = [settings.topic(t) for t in CLEARED if settings.topic(t) in existing]
        plan.dirs = [stores_dir(settings)]
    return plan


def refusal(plan: ResetPlan) -> str | None:
    running = {g: m for g, m in plan.members.items() if m}
    if not running:
        return None
    who = "; ".join(f"{g}: {len(m)} member(s) ({', '.join(m[:3])})"
                    for g, m in sorted(running.items()))
    return (f"processors of this prefix are running ({who}); stop them (`devline run`, "
            "`devline processor`) and reset again (one stopped in the last 6 s is still a "
            "member until its session times out: --wait 10 waits for it)")


async def apply_reset(settings: Settings, plan: ResetPlan) -> None:
    """Carry out `plan`. Refuses if a processor joined since it was made."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_common())
    async with running(admin):
        for group in plan.members:
            plan.members[group] = await _members(admin, group)
        why = refusal(plan)
        if why:
            raise ResetRefused(why)
        if plan.clear:
            await admin.delete_topics(plan.clear)
            await _gone(admin, plan.clear)
    if plan.clear:
        specs = tuple(s for s in T.CATALOGUE if settings.topic(s.name) in plan.clear)
        await _create_again(settings, specs)
        await _commit(settings, settings.group(DISPATCHER), {settings.topic(T.BOARD): {0: 0}})
    await _commit(settings, settings.group(GROUP), plan.offsets)
    for d in plan.dirs:
        if d.exists():
            await asyncio.to_thread(shutil.rmtree, d)


async def _gone(admin: Any, topics: list[str], within: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while set(topics) & set(await admin.list_topics()):
        if asyncio.get_running_loop().time() > deadline:
            raise ResetRefused(f"topics still being deleted after {within:g}s: {topics}")
        await asyncio.sleep(0.2)


async def _create_again(settings: Settings, specs: tuple[T.TopicSpec, ...]) -> None:
    for _ in range(100):  # the broker may still be finishing the deletion
        try:
            await T.create_topics(settings, specs)
            await T.wait_for_topics(settings, specs=specs)
            return
        except RuntimeError:
            await asyncio.sleep(0.3)
    await T.create_topics(settings, specs)


async def _commit(settings: Settings, group: str, offsets: dict[str, dict[int, int]]) -> None:
    """Commit offsets for a group with no members (as kafka-consumer-groups
    --reset-offsets does)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    wanted = {TopicPartition(t, p): OffsetAndMetadata(o, "devline reset")
              for t, parts in offsets.items() for p, o in parts.items()}
    if not wanted:
        return
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=group,
                                enable_auto_commit=False, **settings.kafka_common())
    async with running(consumer):
        consumer.assign(list(wanted))
        await consumer.commit(wanted)
