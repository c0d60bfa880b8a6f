"""Wire the scheduler's edge (`streams.edge.Processor`) to Faust: agents, timers, recovery.

State changes only by folding the records of `devline.events` in log order, so the tables
always equal a fold of the log. What the processor sends (dispatches, cached completions,
retry decisions) is itself an event that the fold will take. The stream agent here is one
of the processor's readers; a record the dispatcher's follower or a dispatch's
acknowledgement brought first was folded then, and the agent skips it
(`streams.edge.ahead`).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from faust.streams import _current_event

from streams.edge.ports import RawRecord
from streams.edge.processor import Processor
from streams.leadership import DispatcherSeat

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger("devline.scheduler")
BATCH_MAX = 500  # events folded before their sends are awaited and their offsets acked


def by_partition(events: list[Any]) -> list[list[Any]]:
    """Events grouped by partition, each group in log order."""
    groups: dict[int, list[Any]] = {}
    for event in events:
        groups.setdefault(event.message.partition, []).append(event)
    return list(groups.values())


class _At:
    """Stands for the stream event of a record folded outside the stream (folded first:
    `streams.edge.ahead`): Faust's tables take the changelog partition of a write from
    the current event's message."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, rec: RawRecord) -> None:
        self.message = rec


@contextmanager
def in_partition(rec: RawRecord) -> Iterator[None]:
    at = _At(rec)
    token = _current_event.set(weakref.ref(cast(Any, at)))
    try:
        yield
    finally:
        _current_event.reset(token)


def register_scheduler(pipeline: Pipeline) -> Processor:
    proc = Processor(pipeline.ports, processor_id=pipeline.settings.instance_id)
    pipeline.processor = proc  # type: ignore[attr-defined]
    app = pipeline.app
    events_topic = pipeline.settings.topic("devline.events")
    proc.in_partition = in_partition
    proc.settled = lambda: not app.rebalancing  # from a rebalance's start to its end

    @app.agent(pipeline.events_topic, name="scheduler")
    async def scheduler_agent(stream: Any) -> None:
        # Events already fetched are handled as one batch (their sends awaited together);
        # acked, so their offsets may be committed, only once that returns.
        events, batch = stream.noack(), []
        queue = getattr(events.channel, "queue", None)
        async for event in events.events():
            batch.append(event)
            if queue is not None and not queue.empty() and len(batch) < BATCH_MAX:
                continue
            for group in by_partition(batch):
                # Faust sends a table write to the changelog partition of its current event
                # (the last one fetched): make that one of the group's, so every write lands
                # in its plan's own partition, where a processor taking it over reads it.
                _current_event.set(weakref.ref(group[-1]))
                await proc.on_event_records([RawRecord.of(e.message) for e in group])
            for e in batch:
                await events.ack(e)
            batch.clear()
            await proc.pump()

    @app.agent(pipeline.workers_topic, name="heartbeat-check")
    async def heartbeat_check(stream: Any) -> None:
        async for event in stream.events():
            await proc.check_heartbeat_record(RawRecord.of(event.message))

    seat = DispatcherSeat(pipeline.settings, proc)

    @app.task
    async def dispatcher_seat() -> None:
        """Follow the board and the heartbeats; stand for dispatcher (Kafka elects one)."""
        await seat.run()

    @app.timer(interval=0.1)
    async def retry_timer() -> None:
        await proc.fire_timers()

    @app.timer(interval=1.0)
    async def housekeeping() -> None:
        await proc.tick()
        await proc.metrics()

    @pipeline.tasks.on_recover
    async def recovered() -> None:
        """Tables are recovered; the stream has not resumed yet. Note where each event
        partition ends now and where we will start reading it."""
        consumer: Any = app.consumer
        assigned: dict[str, list[int]] = {}
        for tp in consumer.assignment():
            assigned.setdefault(tp.topic.rsplit(".", 1)[-1], []).append(tp.partition)
        log.info("assigned: %s", ", ".join(f"{t} {sorted(p)}" for t, p in sorted(
            assigned.items()) if not t.endswith("changelog") and "__assignor" not in t))
        tps = {tp for tp in consumer.assignment() if tp.topic == events_topic}
        ends = await consumer.highwaters(*tps) if tps else {}
        committed = await consumer.seek_to_committed() if tps else {}
        await proc.on_assigned(
            {tp.partition: int(end or 0) for tp, end in ends.items()},
            {tp.partition: off for tp, off in committed.items() if tp.topic == events_topic})

    return proc
