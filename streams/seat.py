"""One running copy per prefix of a stage that must not run twice (the rollout stage, the
ops agent): Kafka elects it, as it elects the dispatcher.

Every copy joins the group `devline-<name>-seat` on the dispatch board's single partition;
the member Kafka gives the partition to holds the seat and runs the stage, the others
stand by. It never reads the partition (paused): assignment is the vote, and the sticky
assignor leaves the seat where it is when a standby joins. When the holder stops cleanly
it leaves the group and a standby takes over at once; when it dies, after the session
timeout (6 s). A holder cut off from the broker for longer than that learns it lost the
seat when it rejoins and stops its stage then: for that long two may run (as with the
dispatcher's seat), which the stages' deterministic event ids make harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

from devline.settings import Settings
from streams import topics as T
from streams.client import topic_partitions
from streams.lifecycle import started

log = logging.getLogger("devline.seat")

SESSION_MS = 6_000  # as the dispatcher's seat: a dead holder is replaced after this

Stage = Callable[[asyncio.Event], Coroutine[Any, Any, Any]]


class _Vote(ConsumerRebalanceListener):
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.held = asyncio.Event()
        self.lost = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass  # every rebalance revokes first; the sticky assignment that follows decides

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            self.consumer.pause(*assigned)
            self.lost.clear()
            self.held.set()
        elif self.held.is_set():
            self.held.clear()
            self.lost.set()


def _sticky() -> type[StickyPartitionAssignor]:
    """aiokafka's sticky assignor keeps the member's last assignment in class attributes: a
    class of its own per seat, so two seats in one process (tests) do not share it."""
    return type("SeatAssignor", (StickyPartitionAssignor,), {
        "member_assignment": None, "generation": StickyPartitionAssignor.DEFAULT_GENERATION_ID})


async def _first(*aws: Awaitable[Any]) -> None:
    """Wait for the first of `aws`; cancel the waits made here, never a task passed in."""
    mine = [asyncio.ensure_future(a) for a in aws if not isinstance(a, asyncio.Task)]
    theirs = [a for a in aws if isinstance(a, asyncio.Task)]
    try:
        await asyncio.wait([*mine, *theirs], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in mine:
            if not t.done():
                t.cancel()


async def run_seated(settings: Settings, name: str, stage: Stage,
                     stop: asyncio.Event) -> None:
    """Run `stage(stage_stop)` while this process holds the seat `name`, until `stop`. A
    stage that ends by itself ends this too (its exception propagates)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap, group_id=settings.group(f"devline-{name}-seat"),
        client_id=f"devline-{name}-{socket.gethostname()}-{os.getpid()}",
        group_instance_id=f"{settings.instance_id}-{name}" if settings.instance_id else None,
        enable_auto_commit=False, session_timeout_ms=SESSION_MS, heartbeat_interval_ms=1000,
        max_poll_interval_ms=3_600_000, partition_assignment_strategy=(_sticky(),),
        metadata_max_age_ms=5000, **settings.kafka_common())
    vote = _Vote(consumer)
    await started(consumer)

    async def stand() -> None:  # keeps the membership alive; the paused partition is empty
        while True:
            await consumer.getmany(timeout_ms=1000)

    standing = asyncio.create_task(stand())
    try:
        # Subscribed before its metadata has the topic, the group would assign nothing
        # until the next refresh: wait for the partition first.
        await topic_partitions(consumer, settings.topic(T.BOARD))
        consumer.subscribe([settings.topic(T.BOARD)], listener=vote)
        while not stop.is_set():
            if not vote.held.is_set():
                log.info("%s: waiting for the seat (one process per prefix runs it)", name)
                await _first(vote.held.wait(), stop.wait(), standing)
                if standing.done():
                    standing.result()
                if stop.is_set():
                    break
            log.info("%s: holding the seat; running", name)
            stage_stop = asyncio.Event()
            running = asyncio.create_task(stage(stage_stop))
            await _first(vote.lost.wait(), stop.wait(), running, standing)
            stage_stop.set()
            await running
            if standing.done():
                standing.result()
            if vote.lost.is_set() and not stop.is_set():
                log.warning("%s: lost the seat; stopped, standing by", name)
            elif not stop.is_set():
                return  # the stage ended by itself
    finally:
        standing.cancel()
        with contextlib.suppress(BaseException):
            await standing
        await consumer.stop()
