"""The processor's Kafka transport: its consumer reads a partition the group has never
committed from the first record, as if offset 0 had been committed, so a plan (or event)
produced while no processor ran is read when one starts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types import TP

from streams.producing import FaustProducer

FETCH_WAIT_MS = 50  # the processor's long poll (Faust's own is 1500 ms)


class ShortPollThread(faust_kafka.AIOKafkaConsumerThread):
    """Faust's consumer thread with a 50 ms long poll instead of its hard-coded 1.5 s.

    aiokafka leaves a partition whose fetched records are not yet consumed out of its next
    fetch, and has one fetch in flight per broker. So while a busy partition's records
    were being folded, the next fetch asked for the idle partitions only and waited out
    its 1.5 s long poll before the busy one could be asked again: with one plan (every
    event on one partition) a dispatch reached the processor 0.3 s late by median and
    1.6 s at p90, and the pool idled. 50 ms bounds that wait; an idle processor sends 20
    fetches a second."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_WAIT_MS  # read by its start(), not yet called
        return consumer


class FromStartConsumer(faust_kafka.Consumer):
    """Faust's aiokafka consumer, with a partition the group never committed read from its
    first record exactly as if offset 0 had been committed.

    Faust (faust-streaming 0.15.3) lost such records. After table recovery it pauses the
    changelog partitions while its fetch loop waits in aiokafka on the live set of active
    partitions (`Consumer._wait_next_records` hands over the set itself, not a copy); the
    set becomes empty, which aiokafka's `Fetcher.fetched_records` reads as "every
    partition", so it consumed the still-paused stream partitions and Faust dropped their
    records (`Consumer.getmany` yields active partitions only), counting on
    `perform_seek` to rewind them. That seek goes to the committed offset, and aiokafka's
    `seek_to_committed` does nothing for a partition without one (`if offset and offset
    > 0`): its position stayed past the dropped records. The same rewind is missed for
    records in flight when a rebalance stops the fetcher.

    Three overrides close it:
    - `_getmany` gives aiokafka a frozen copy of the active partitions, so it never hands
      over records of a partition Faust has paused;
    - `seek_to_committed` looks up every committed offset first and then seeks every
      partition in one step of the consumer thread: to its committed offset, or to 0 when
      it has none (changelogs excepted: recovery positions those);
    - `perform_seek` holds the stream partitions out of delivery while they are rewound,
      so nothing fetched from the old position is delivered after Faust resets its read
      offsets (records fetched before the seek are dropped and read again from the
      rewound position; records fetched after it are delivered).
    """

    # Faust's own logger name (mode would name it after this module), so the Faust log
    # level the CLI sets applies.
    logger = logging.getLogger("faust.transport.drivers.aiokafka.from_start")

    def _new_consumer_thread(self) -> faust_kafka.AIOKafkaConsumerThread:
        return ShortPollThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: set[TP] | None,
                       timeout: float) -> RecordMap:  # noqa: ASYNC109 - Faust's signature
        partitions = set(active_partitions or ())  # a copy nobody pauses
        if not partitions:  # Faust never asks with none active; never mean "all"
            await self.sleep(timeout)
            return {}
        return await super()._getmany(partitions, timeout)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        changelogs = frozenset(self.app.tables.changelog_topics)
        committed: Mapping[TP, int] = await self._thread.call_thread(
            self._seek_all, changelogs)
        return committed  # None where the group never committed, as aiokafka returns it

    async def _seek_all(self, changelogs: frozenset[str]) -> dict[TP, int | None]:
        """Runs in the consumer thread. Every seek comes after every lookup, in one step:
        a fetch drained before it is rewound, one drained after it holds only records
        from the new positions (aiokafka seeks each partition right after its own lookup,
        so a fetch could drain an early partition's records while later ones are looked
        up)."""
        consumer: Any = self._thread._ensure_consumer()
        committed: dict[TP, int | None] = {}
        for tp in consumer.assignment():
            committed[tp] = await consumer.committed(tp)
        assigned = consumer.assignment()  # a rebalance may have run during the lookups
        for tp, offset in committed.items():
            if tp not in assigned:
                continue
            if offset is not None and offset > 0:
                consumer.seek(tp, offset)
            elif tp.topic not in changelogs:
                consumer.seek(tp, 0)  # never committed (or committed at 0): the start
        return committed

    async def perform_seek(self) -> None:
        held = {tp for tp in self._get_active_partitions() if not self._is_changelog_tp(tp)}
        app: Any = self.app
        rebalance = (app.rebalancing_count, app.consumer_generation_id)
        self.pause_partitions(held)
        try:
            await super().perform_seek()
        finally:
            if (app.rebalancing_count, app.consumer_generation_id) == rebalance:
                self.resume_partitions(held)  # else the new rebalance decides


class FromStartTransport(faust_kafka.Transport):
    """The aiokafka transport with `FromStartConsumer` and `FaustProducer` (a produce
    request carries every batch due for its broker)."""

    Consumer = FromStartConsumer
    Producer = FaustProducer
