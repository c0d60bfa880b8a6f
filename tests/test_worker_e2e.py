"""A worker against the real broker: it joins only once the work topic exists, and it
checks an item that moved to it against the heartbeats of its first owner."""

from __future__ import annotations

import asyncio
import time

from devline.settings import Settings
from streams import topics as T
from streams.client import produce
from streams.topics import create_topics
from streams.worker import Worker


def test_a_worker_started_before_its_topic_exists_owns_partitions_once_it_does(
        settings: Settings) -> None:
    async def go() -> tuple[list[int], float]:
        worker = Worker(settings, worker_id="early", grace_s=1.0)
        run = asyncio.create_task(worker.run())
        await asyncio.sleep(2.0)  # no topics yet: it waits instead of joining with nothing
        assert worker.partitions == []
        created = time.monotonic()
        await create_topics(settings)
        for _ in range(600):  # up to 60 s
            if worker.partitions:
                break
            await asyncio.sleep(0.1)
        owned = list(worker.partitions), time.monotonic() - created
        worker.stop()
        await asyncio.wait_for(run, 60)
        return owned

    partitions, took = asyncio.run(go())
    assert partitions == list(range(settings.work_partitions))
    assert took < 20  # aiokafka's default metadata refresh would have taken 300 s


def test_a_fresh_worker_sees_that_a_moved_item_runs_on_its_first_owner(topics: Settings
                                                                       ) -> None:
    """A partition moved to a new worker while its first owner still runs an item: the
    new worker's very first check must find the owner's heartbeat (a fresh client knows
    no topic's partitions) and skip the item, not run it a second time."""
    from schemas.codec import Codec
    from streams.emit import now_ms
    from streams.staleness import StalenessProbe

    settings = topics
    beat = {"worker_id": "w1.100", "host": "h", "pid": 100, "state": "busy", "capacity": 1,
            "running": ["p/long.py"], "partitions": [0], "at": now_ms()}
    asyncio.run(produce(settings, T.WORKERS, "WorkerHeartbeat", beat, key="w1.100"))
    item = {"plan_id": "p", "task_id": "long.py", "dispatch_id": "d1", "worker_id": "w1.100",
            "dispatch_partition": None, "dispatch_offset": None}

    async def ask() -> str | None:
        probe = StalenessProbe(settings, Codec.from_settings(settings), "w0.200", "w0")
        try:
            return await probe.reason(item)
        finally:
            await probe.stop()

    assert asyncio.run(ask()) == "already running on w1.100"
