"""The processor's producer: once any batch bound for a broker has lingered long enough,
everything queued for that broker goes in the same request.

aiokafka times the linger of each partition's batch on its own and has one produce
request in flight per broker. A fold writes to half a dozen partitions (its events, the
board, a worker's work partition, three changelogs) at moments a few milliseconds apart,
so their batches came due one after another, and each waited for the request before it:
a batch's sends took several round trips. The Java client drains every partition of a
broker that has one batch ready; so does this one.

`due_now` ends the linger for what is queued: the dispatcher calls it after logging its
dispatches, which a slot waits on (the linger is pure latency there, and it also takes
the board entries that confirm earlier dispatches).
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import MessageAccumulator
from faust.transport.drivers import aiokafka as faust_kafka


class WholeNodeAccumulator(MessageAccumulator):
    """aiokafka's accumulator, draining every partition of a broker that has a batch due."""

    def drain_by_nodes(self, ignore_nodes: Any, muted_partitions: Any = frozenset()) -> Any:
        due: set[int] = set()
        heads = []
        for tp, batches in self._batches.items():
            if tp in muted_partitions or not batches:
                continue
            leader = self._cluster.leader_for_partition(tp)
            if leader is None or leader == -1 or (ignore_nodes and leader in ignore_nodes):
                continue
            heads.append((leader, batches[0]))
            if batches[0].remaining_linger() is None:
                due.add(leader)
        for leader, batch in heads:
            if leader in due:
                batch._linger_time = 0  # due with the rest of its broker's batches
        return super().drain_by_nodes(ignore_nodes, muted_partitions)

    def due_now(self) -> None:
        """Everything queued is due: the sender takes it as soon as it may (a broker's
        request in flight still goes first)."""
        for batches in self._batches.values():
            if batches:
                batches[0]._linger_time = 0
        if not self._waiter_future.done():
            self._waiter_future.set_result(None)  # wakes the sender's wait for data


class WholeNodeProducer(AIOKafkaProducer):
    """AIOKafkaProducer with `WholeNodeAccumulator`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Same state, methods added: the sender holds this object already.
        self._message_accumulator.__class__ = WholeNodeAccumulator

    def due_now(self) -> None:
        """Send everything queued without waiting out the linger."""
        self._message_accumulator.due_now()


class FaustProducer(faust_kafka.Producer):
    """Faust's aiokafka producer, built as a `WholeNodeProducer`."""

    @property
    def _producer_type(self) -> type[AIOKafkaProducer]:
        return WholeNodeProducer

    def due_now(self) -> None:
        """Send everything queued now (nothing to do before the producer started)."""
        producer = self._producer
        if isinstance(producer, WholeNodeProducer):
            producer.due_now()
