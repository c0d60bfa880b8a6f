"""Events handled in batches: one wait for all their sends and store writes, and a batch
whose sends fail is redone whole (on in-memory ports, no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from streams import topics as T
from streams.edge.writes import WriteBehind
from tests.sim import Sim


class BatchSim(Sim):
    """Hands the processor every event the log holds beyond its position at once, as the
    Faust agent does with what it has fetched; sends return delivery futures."""

    async def step(self) -> None:
        events = self.log.topics[T.EVENTS]
        if self.started and len(events) - self.pos > 1:
            batch = events[self.pos:]
            await self.proc.on_event_records(batch)
            self.pos = self.committed = len(events)
            await self.proc.pump()
            return
        await super().step()


def plan(n: int) -> dict[str, Any]:
    return {"plan_id": "p1", "project": "batch", "name": "p1",
            "files": [{"path": f"m{i}.py", "content": f"X = {i}\n"} for i in range(n)]}


def test_a_batch_whose_work_items_failed_to_send_is_redone_and_sends_them_again() -> None:
    """The first delivery of every work item fails after the batch has gone on: the batch
    is redone, its items are sent again, and every task still runs exactly once."""

    async def go() -> BatchSim:
        sim = BatchSim(commit_every=1)
        real = sim.log.send
        failed: set[bytes] = set()

        async def later(topic: str, **kw: Any) -> asyncio.Future[None]:
            delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if topic == T.WORK_DEV and kw["key"] not in failed:
                failed.add(kw["key"])
                delivery.set_exception(KafkaTimeoutError("delivery timed out"))
            else:
                await real(topic, **kw)
                delivery.set_result(None)
            return delivery

        sim.ports.emit._send = later
        sim.ports.sleep = _no_sleep
        sim.submit(plan(6))
        await sim.run(lambda s: s.reported("p1"))
        return sim

    sim = asyncio.run(go())
    assert sim.outcome()["plans"]["p1"]["done"] == 6
    assert set(sim.outcome()["runs"].values()) == {1}
    assert sim.log.topics[T.DLQ] == []


async def _no_sleep(_: float) -> None:
    return None


def test_writes_of_a_batch_run_together_and_are_all_awaited() -> None:
    async def go() -> tuple[list[str], float]:
        writes = WriteBehind()
        order: list[str] = []

        async def put(name: str) -> None:
            await asyncio.sleep(0.05)
            order.append(name)

        async def batch() -> None:
            for i in range(5):
                await writes.write(put(f"w{i}"), digest=f"d{i}")
            order.append("folded")  # the fold goes on while they run
            await writes.written("d3")
            order.append("looked up d3")

        began = asyncio.get_running_loop().time()
        await writes.run(batch)
        return order, asyncio.get_running_loop().time() - began

    order, took = asyncio.run(go())
    assert order[0] == "folded"
    assert order.index("looked up d3") > order.index("w3")
    assert sorted(o for o in order if o.startswith("w")) == [f"w{i}" for i in range(5)]
    assert took < 0.2  # together, not one after another (5 x 50 ms)


def test_a_failed_write_fails_the_batch_and_a_write_outside_one_is_awaited_at_once() -> None:
    async def go() -> list[str]:
        writes = WriteBehind()
        done: list[str] = []

        async def bad() -> None:
            raise OSError("disk full")

        async def good() -> None:
            done.append("good")

        async def batch() -> None:
            await writes.write(bad())
            await writes.write(good())

        with pytest.raises(OSError, match="disk full"):
            await writes.run(batch)
        assert done == ["good"]  # every write of the batch was awaited
        await writes.write(good())
        return done

    assert asyncio.run(go()) == ["good", "good"]


def test_releases_of_one_event_read_the_stores_refs_together_and_still_hit() -> None:
    """A plan whose results another processor cached (the refs are in the shared store,
    this processor's cache table never saw them) completes from the cache: every release
    of its acceptance is looked up in one read-ahead."""

    async def go() -> tuple[Sim, list[int]]:
        sim = Sim()
        sim.submit(plan(5))
        await sim.run(lambda s: s.reported("p1"))
        dict.clear(sim.tables["cache"])  # as seen from a processor owning another partition
        batches: list[int] = []
        real = sim.proc.dispatch.look_ahead

        async def counted(state: Any, task_ids: list[str]) -> None:
            batches.append(len(task_ids))
            await real(state, task_ids)

        sim.proc.dispatch.look_ahead = counted  # type: ignore[method-assign]
        sim.submit({**plan(5), "plan_id": "p2", "name": "p2"})
        await sim.run(lambda s: s.reported("p1", "p2"))
        return sim, batches

    sim, batches = asyncio.run(go())
    assert batches == [5]
    assert sim.outcome()["plans"]["p2"]["cache_hits"] == 5
    assert sim.outcome()["plans"]["p2"]["executor_runs"] == 0
