"""A worker's offsets: what it fetched, started and finished per partition, what it may
commit, and what to do when a rebalance takes partitions away or gives them back.

A partition's offset is committed only past the longest run of finished records, so a
record is committed after its result is acknowledged, never before (at-least-once; the
worker's staleness check and the fold's idempotence make a redelivery harmless).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

if TYPE_CHECKING:
    from streams.worker import Worker

log = logging.getLogger("devline.worker")


class OffsetBook:
    def __init__(self) -> None:
        # Records fetched but not started (only after a rebalance or a race: the dispatcher
        # sends work to free slots). Uncommitted, so never lost.
        self.fetched: deque[tuple[TopicPartition, Any]] = deque()
        self.dropped: dict[TopicPartition, int] = {}  # revoked before they started
        self.pending: dict[TopicPartition, set[int]] = {}
        self.done: dict[TopicPartition, set[int]] = {}

    def fetch(self, tp: TopicPartition, record: Any) -> None:
        self.pending.setdefault(tp, set()).add(record.offset)
        self.fetched.append((tp, record))

    def finished(self, tp: TopicPartition, offset: int) -> None:
        self.done.setdefault(tp, set()).add(offset)

    def commit_points(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the longest run of finished records (and forget
        that run)."""
        offsets: dict[TopicPartition, int] = {}
        for tp, pending in self.pending.items():
            done = self.done.get(tp, set())
            commit = None
            for offset in sorted(pending):
                if offset not in done:
                    break
                commit = offset
            if commit is not None:
                offsets[tp] = commit + 1
                self.pending[tp] = {o for o in pending if o > commit}
                self.done[tp] = {o for o in done if o > commit}
        return offsets

    def revoke(self, gone: set[TopicPartition], started: set[tuple[TopicPartition, int]]
               ) -> None:
        """Partitions taken away: drop their unstarted records (their next owner gets them)
        and remember where to resume if a partition comes back to us."""
        for tp, record in self.fetched:
            if tp in gone:
                self.dropped[tp] = min(record.offset, self.dropped.get(tp, record.offset))
        self.fetched = deque((tp, r) for tp, r in self.fetched if tp not in gone)
        for tp in gone:
            self.pending[tp] = {o for o in self.pending.get(tp, set())
                                if (tp, o) in started or o in self.done.get(tp, set())}

    def resume_points(self, assigned: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Partitions given (back) to us whose fetch position moved past records we dropped."""
        points = {tp: off for tp, off in self.dropped.items() if tp in assigned}
        self.dropped.clear()
        return points


async def commit_finished(consumer: Any, book: OffsetBook, what: str) -> None:
    """Commit, per partition, past the longest run of finished offsets. A failure (a
    rebalance took the partition) is logged: the partition's next owner redoes the rest."""
    offsets = book.commit_points()
    if offsets:
        try:
            await consumer.commit(offsets)
        except Exception as exc:
            log.warning("commit failed (%s); %s will be redelivered", exc, what)


class RebalanceListener(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Commit what finished on partitions we are losing, after a short wait for tasks
        # about to end. Longer tasks go on: the partition's next owner sees them running
        # (heartbeats) and skips them, or they are re-dispatched if we die.
        w = self.worker
        gone = set(revoked)
        w.offsets.revoke(gone, {(tp, off) for tp, off, _ in w.running.values()})
        losing = [t for t, (tp, _, _) in w.running.items() if tp in gone]
        if losing:
            await asyncio.wait(losing, timeout=w.revoke_wait_s)
        await w.commit()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        w = self.worker
        if w.consumer is not None:
            for tp, offset in w.offsets.resume_points(set(assigned)).items():
                w.consumer.seek(tp, offset)  # our position moved past records we dropped
        w.partitions = sorted(tp.partition for tp in assigned)
        log.info("worker %s owns partitions %s", w.worker_id, w.partitions)
        await w.heartbeat()
