"""The processor's producer sends everything queued for a broker once any of its batches is
due (`streams.producing`), not each partition's batch at its own linger's end."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.structs import TopicPartition

from devline.settings import Settings
from streams import topics as T
from streams.producing import WholeNodeAccumulator, WholeNodeProducer

LINGER_MS = 10_000  # long enough that only a batch made "old" below is due


class Cluster:
    """Partitions 0-2 led by broker 1, partition 3 by broker 2."""

    def leader_for_partition(self, tp: TopicPartition) -> int:
        return 2 if tp.partition == 3 else 1


def tp(partition: int) -> TopicPartition:
    return TopicPartition("t", partition)


async def accumulator(*partitions: int) -> WholeNodeAccumulator:
    acc = WholeNodeAccumulator(Cluster(), 16_384, 0, 30, linger_ms=LINGER_MS)
    for p in partitions:
        await acc.add_message(tp(p), b"k", b"v", timeout=1)
    return acc


def make_due(acc: WholeNodeAccumulator, partition: int) -> None:
    acc._batches[tp(partition)][0]._ctime = time.monotonic() - LINGER_MS  # lingered out


def drained(batches: dict[int, dict[TopicPartition, Any]]) -> dict[int, list[int]]:
    return {node: sorted(t.partition for t in by_tp) for node, by_tp in batches.items()}


def test_one_due_batch_takes_every_partition_of_its_broker() -> None:
    asyncio.run(_test_one_due_batch_takes_every_partition_of_its_broker())


async def _test_one_due_batch_takes_every_partition_of_its_broker() -> None:
    acc = await accumulator(0, 1, 2, 3)
    make_due(acc, 1)
    batches, _ = acc.drain_by_nodes(ignore_nodes=set())
    assert drained(batches) == {1: [0, 1, 2]}  # broker 2's batch still lingers
    make_due(acc, 3)
    batches, _ = acc.drain_by_nodes(ignore_nodes=set())
    assert drained(batches) == {2: [3]}


def test_nothing_due_nothing_drained() -> None:
    asyncio.run(_test_nothing_due_nothing_drained())


async def _test_nothing_due_nothing_drained() -> None:
    acc = await accumulator(0, 1, 3)
    batches, _ = acc.drain_by_nodes(ignore_nodes=set())
    assert batches == {}


def test_a_broker_with_a_request_in_flight_waits() -> None:
    asyncio.run(_test_a_broker_with_a_request_in_flight_waits())


async def _test_a_broker_with_a_request_in_flight_waits() -> None:
    acc = await accumulator(0, 1, 3)
    make_due(acc, 0)
    make_due(acc, 3)
    batches, _ = acc.drain_by_nodes(ignore_nodes={1})
    assert drained(batches) == {2: [3]}
    batches, _ = acc.drain_by_nodes(ignore_nodes=set())
    assert drained(batches) == {1: [0, 1]}


def test_muted_partitions_stay() -> None:
    asyncio.run(_test_muted_partitions_stay())


async def _test_muted_partitions_stay() -> None:
    acc = await accumulator(0, 1, 2)
    make_due(acc, 0)
    batches, _ = acc.drain_by_nodes(ignore_nodes=set(), muted_partitions={tp(2)})
    assert drained(batches) == {1: [0, 1]}


def test_due_now_ends_every_linger() -> None:
    asyncio.run(_test_due_now_ends_every_linger())


async def _test_due_now_ends_every_linger() -> None:
    acc = await accumulator(0, 1, 3)
    acc.due_now()
    assert acc.waiter().done()  # the sender's wait for data is over
    batches, _ = acc.drain_by_nodes(ignore_nodes=set())
    assert drained(batches) == {1: [0, 1], 2: [3]}


def test_a_fold_of_sends_goes_in_one_request(topics: Settings) -> None:
    """Against the broker: records to 6 partitions, queued 10 ms apart under a 1 s
    linger, go out in one produce request (aiokafka's own accumulator sends 6)."""
    assert asyncio.run(produce_requests(topics, 6)) == 1


async def produce_requests(settings: Settings, partitions: int) -> int:
    topic = settings.topic(T.WORK_DEV)
    producer = WholeNodeProducer(bootstrap_servers=settings.bootstrap, linger_ms=1000)
    await producer.start()
    try:
        # Every partition's leader known and serving first (a topic just made may answer
        # "not leader" once, and a retried batch is a request of its own).
        warm = [await producer.send(topic, b"w", partition=p) for p in range(partitions)]
        producer._message_accumulator.due_now()
        await asyncio.gather(*warm)
        requests = 0
        client_send = producer.client.send

        async def counting(node_id: int, request: Any, **kw: Any) -> Any:
            nonlocal requests
            requests += type(request).__name__.startswith("ProduceRequest")
            return await client_send(node_id, request, **kw)
        producer.client.send = counting
        futures = []
        for p in range(partitions):
            futures.append(await producer.send(topic, b"x", partition=p))
            await asyncio.sleep(0.01)
        metadata = await asyncio.gather(*futures)
        assert sorted(m.partition for m in metadata) == list(range(partitions))
        return requests
    finally:
        await producer.stop()


def test_the_processor_app_produces_through_it(settings: Settings) -> None:
    from streams.app import Pipeline
    from streams.producing import FaustProducer

    producer = Pipeline(settings).app.producer
    assert isinstance(producer, FaustProducer)
    assert producer._producer_type is WholeNodeProducer
