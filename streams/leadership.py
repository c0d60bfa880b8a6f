"""Who dispatches: Kafka elects one processor per topic prefix, and every processor keeps a
warm copy of what the dispatcher knows.

Two consumers per processor, outside Faust (plain aiokafka, same event loop):

- the **follower** reads the dispatch board and the ops decisions from their beginning and
  the worker heartbeats from 20 s back, with no group (every processor reads all of them),
  and feeds them to the `Leader`; it reads `devline.events` from its end, for results
  (their headers free slots at once) and to fold the records of the processor's own
  partitions sooner than Faust's stream brings them (`Processor.fold_followed`);
- the **candidate** joins the `devline-dispatcher` group on the board topic, whose single
  partition Kafka gives to exactly one member: that member is the dispatcher. It never
  reads (the partition is paused); assignment is the vote. Static membership (the
  processor's instance id) lets a restarted processor take the seat back at once; a
  processor that does not come back loses it after the session timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from devline.settings import Settings
from streams import topics as T
from streams.edge.ports import RawRecord
from streams.edge.processor import Processor

log = logging.getLogger("devline.dispatch")

HEARTBEATS_BACK_S = 20.0  # heartbeats older than the worker timeout say nothing about now
SESSION_MS = 6_000        # a dispatcher that died without leaving loses the seat after this
                          # (the broker's group.min.session.timeout.ms default)
RETRY_S = 2.0


class _Vote(ConsumerRebalanceListener):
    def __init__(self, seat: DispatcherSeat) -> None:
        self.seat = seat

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            self.seat.proc.leader.deposed()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if not assigned:
            return
        candidate = self.seat.candidate
        assert candidate is not None
        candidate.pause(*assigned)  # the vote, not the records: the follower reads them
        end = await self.seat.board_end()
        self.seat.proc.leader.elected(end, candidate._coordinator.generation)
        await self.seat.proc.pump()


class DispatcherSeat:
    def __init__(self, settings: Settings, proc: Processor) -> None:
        self.s = settings
        self.proc = proc
        self.board = TopicPartition(settings.topic(T.BOARD), 0)
        self.follower: AIOKafkaConsumer | None = None
        self.candidate: AIOKafkaConsumer | None = None

    def _consumer(self, **extra: Any) -> AIOKafkaConsumer:
        s = self.s
        return AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50,
            max_partition_fetch_bytes=s.max_message_bytes, metadata_max_age_ms=5000,
            **extra, **s.kafka_common())

    async def run(self) -> None:
        """Follow and stand, until cancelled; a lost connection is retried, never fatal."""
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dispatcher seat: %s; retrying in %.0fs", exc, RETRY_S)
                self.proc.leader.deposed()
                await asyncio.sleep(RETRY_S)
            finally:
                await self._stop()

    async def _run(self) -> None:
        self.follower = self._consumer()
        await self.follower.start()
        heartbeats = await self._partitions(self.s.topic(T.WORKERS))
        events = await self._partitions(self.s.topic(T.EVENTS))
        ops = await self._partitions(self.s.topic(T.OPS))
        self.follower.assign([self.board, *heartbeats, *events, *ops])
        for tp in ops:  # every decision again: obeying one twice is a no-op
            await self.follower.seek_to_beginning(tp)
        for tp in events:  # results from now on: they free worker slots early
            await self.follower.seek_to_end(tp)
        self.follower.seek(self.board, self.proc.leader.board_pos)
        since = int((time.time() - HEARTBEATS_BACK_S) * 1000)
        found = await self.follower.offsets_for_times({tp: since for tp in heartbeats})
        for tp in heartbeats:
            at = found.get(tp)
            if at is not None:
                self.follower.seek(tp, at.offset)
            else:
                await self.follower.seek_to_end(tp)
        self.candidate = self._consumer(
            group_id=self.s.group("devline-dispatcher"),
            client_id=f"devline-dispatcher-{socket.gethostname()}-{os.getpid()}",
            group_instance_id=f"{self.s.instance_id}-dispatcher" if self.s.instance_id
            else None, session_timeout_ms=SESSION_MS, heartbeat_interval_ms=1000,
            max_poll_interval_ms=3_600_000)
        await self.candidate.start()
        self.candidate.subscribe([self.board.topic], listener=_Vote(self))
        await asyncio.gather(self._follow(), self._stand())

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        assert self.follower is not None
        for _ in range(50):
            parts = self.follower.partitions_for_topic(topic)
            if parts:
                return [TopicPartition(topic, p) for p in sorted(parts)]
            await self.follower._client.force_metadata_update()
            await asyncio.sleep(0.2)
        raise RuntimeError(f"topic {topic} not found; run `devline topics create`")

    async def board_end(self) -> int:
        assert self.follower is not None
        ends = await self.follower.end_offsets([self.board])
        return int(ends.get(self.board) or 0)

    async def _follow(self) -> None:
        assert self.follower is not None
        proc, board, events = self.proc, self.board.topic, self.s.topic(T.EVENTS)
        ops = self.s.topic(T.OPS)
        while True:
            batches = await self.follower.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batches.items():
                if tp.topic == events:
                    freed = sum(self._result(record) for record in records)
                    # Dispatching to the slots freed goes on while their results are folded
                    # (the dispatches' own fold waits for that: they come after them).
                    pumping = asyncio.ensure_future(proc.pump()) if freed else None
                    # Read here sooner than by Faust's stream: a partition this process
                    # folds is folded from here when the stream has handed all before.
                    try:
                        await proc.fold_followed(tp.partition,
                                                 [RawRecord.of(r) for r in records])
                    finally:
                        if pumping is not None:
                            await pumping
                    continue
                for record in records:
                    raw = RawRecord.of(record)
                    if tp.topic == board:
                        await proc.on_board_record(raw)
                    elif tp.topic == ops:
                        await proc.leader.on_ops_record(raw)
                    else:
                        await proc.on_heartbeat_record(raw)
            if batches:
                await proc.pump()

    def _result(self, record: Any) -> bool:
        """A TaskCompleted or TaskFailed, known by its headers (nothing is decoded): whether
        it freed a slot."""
        h = dict(record.headers or ())
        if h.get("event-type") not in (b"TaskCompleted", b"TaskFailed"):
            return False
        try:
            return self.proc.leader.result_seen(h["plan-id"].decode(), h["task-id"].decode(),
                                                int(h["attempt"]))
        except (KeyError, ValueError, UnicodeDecodeError):
            return False  # not one of ours: the plan's processor deals with it

    async def _stand(self) -> None:
        assert self.candidate is not None
        while True:  # keeps the membership alive; the paused partition yields nothing
            await self.candidate.getmany(timeout_ms=1000)

    async def _stop(self) -> None:
        for consumer in (self.candidate, self.follower):
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await consumer.stop()
        self.candidate = self.follower = None
