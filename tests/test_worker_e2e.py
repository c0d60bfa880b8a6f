"""A worker against the real broker: it joins only once the work topic exists."""

from __future__ import annotations

import asyncio
import time

from devline.settings import Settings
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
