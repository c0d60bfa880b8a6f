"""Read one plan's rollout back from `devline.rollouts` (for `devline rollout status`)."""

from __future__ import annotations

from typing import Any

from agents.rollout import Action, RolloutEventError, apply, initial_state
from devline.errors import DecodeError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import records
from streams.lifecycle import running
from streams.rollout.records import ACTION, to_event


async def rollouts_partition(settings: Settings, plan: str) -> int:
    """The partition of devline.rollouts that holds a plan's events (its key's)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.partitioner import DefaultPartitioner

    from streams.client import topic_partitions

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, **settings.kafka_common())
    async with running(consumer):
        parts = [tp.partition for tp in await topic_partitions(consumer,
                                                          settings.topic(T.ROLLOUTS))]
    return int(DefaultPartitioner()(plan.encode(), parts, parts))


async def fold_plan(settings: Settings, plan: str, idle_timeout: float = 1.0
                    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[Action]]:
    """The plan's rollout state as the log folds it, its audit records and the fold's
    actions (the last ones say what a control just did)."""
    codec = Codec.from_settings(settings)
    state = initial_state(plan)
    audit: list[dict[str, Any]] = []
    actions: list[Action] = []
    found = []
    part = await rollouts_partition(settings, plan)
    async for record in records(settings, T.ROLLOUTS, idle_timeout=idle_timeout,
                                partitions=[part]):
        if record.key == plan.encode():
            found.append(record)
    for record in sorted(found, key=lambda r: r.offset):
        try:
            avro_type, value = codec.decode(record.value or b"")
        except DecodeError:
            continue
        if avro_type == ACTION:
            audit.append(value)
            continue
        event = to_event(avro_type, value)
        if event is None:
            continue
        try:
            actions += apply(state, event[0].value, event[1], now_ms=int(record.timestamp))
        except RolloutEventError:
            continue
    return state, audit, actions
