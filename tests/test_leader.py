"""The dispatcher's side of the board (`streams.edge.leader`) and cache hits that do not
depend on which processor folded the first result; in memory, on the real edge."""

from __future__ import annotations

import asyncio
from typing import Any

from streams import topics as T
from tests.sim import Sim

FILES = [{"path": "a.py", "content": "A = 1\n"}, {"path": "b.py", "content": "from a import A\n"}]


def entry(seq: int, status: str, **kw: Any) -> dict[str, Any]:
    return {"plan_id": "p", "task_id": "a.py", "seq": seq, "status": status, "path": "a.py",
            "project": "x", "kind": "dev", "priority": 1.0, "attempt": 1, "executor": "demo",
            "dispatch_id": kw.get("dispatch_id", ""), "worker_id": kw.get("worker_id", ""),
            "outcome": kw.get("outcome"), "retry_after_s": None, "at": 0}


def test_a_late_entry_from_a_previous_owner_is_ignored() -> None:
    leader = Sim().proc.leader
    leader.apply(entry(5, "dispatched", dispatch_id="d1", worker_id="w1"))
    leader.apply(entry(3, "ready"))  # written late by the plan's previous processor
    assert not leader.dispatcher.is_queued(("p", "a.py"))
    assert leader.dispatcher.inflight[("p", "a.py")].dispatch_id == "d1"
    # A plan with a budget waits for the fold, which may hold its other tasks.
    leader.apply({**entry(7, "dispatched", dispatch_id="d2", worker_id="w1"), "attempt": 2,
                  "budgeted": True})
    assert not leader.result_seen("p", "a.py", 2)
    leader.apply(entry(7, "done", outcome="completed"))
    assert ("p", "a.py") not in leader.dispatcher.inflight and not leader.entries


def test_a_reopened_dispatch_frees_its_slot_and_queues_the_task() -> None:
    leader = Sim().proc.leader
    leader.apply(entry(5, "dispatched", dispatch_id="d1", worker_id="w1"))
    leader.apply(entry(9, "ready"))  # the lease re-opened it
    assert leader.dispatcher.is_queued(("p", "a.py"))
    assert ("p", "a.py") not in leader.dispatcher.inflight


def test_only_the_elected_dispatcher_dispatches_and_a_deposed_one_drops_its_reservations(
        ) -> None:
    async def go() -> tuple[int, int, int]:
        sim = Sim()
        leader = sim.proc.leader
        sim.worker.heartbeat()
        await sim.proc.on_heartbeat_record(sim.log.topics[T.WORKERS][-1])
        leader.apply(entry(1, "ready"))
        idle = await leader.pump()  # not elected: nothing
        leader.elected(0)
        sent = await leader.pump()
        reserved = len(leader.dispatcher.inflight)
        leader.deposed()
        return idle, sent, reserved - len(leader.dispatcher.inflight)

    idle, sent, dropped = asyncio.run(go())
    assert (idle, sent, dropped) == (0, 1, 1)


def test_a_cache_hit_needs_no_local_cache_entry() -> None:
    """A plan folded by another processor (its `cache` table partition elsewhere) still
    finds the result through the ref in the shared store."""
    async def go() -> Sim:
        sim = Sim()
        sim.submit({"plan_id": "p1", "project": "c", "name": "p1", "files": FILES})
        await sim.run(lambda s: s.reported("p1"))
        dict.clear(sim.tables["cache"])  # this processor never saw those results
        sim.submit({"plan_id": "p2", "project": "c", "name": "p2", "files": FILES})
        await sim.run(lambda s: s.reported("p2"))
        return sim

    sim = asyncio.run(go())
    assert sim.plan("p2")["cache_hits"] == 2 and sim.plan("p2")["executor_runs"] == 0
    assert len(sim.store.refs) == 2


def test_a_result_in_the_log_frees_its_slot_before_the_fold_posts_it() -> None:
    leader = Sim().proc.leader
    leader.apply(entry(5, "dispatched", dispatch_id="d1", worker_id="w1"))
    assert not leader.result_seen("p", "a.py", 2)  # another attempt's result: not ours
    assert ("p", "a.py") in leader.dispatcher.inflight
    assert leader.result_seen("p", "a.py", 1)
    assert ("p", "a.py") not in leader.dispatcher.inflight
    # The fold refused that result (a stale run): its board entry puts the dispatch back.
    leader.apply(entry(6, "dispatched", dispatch_id="d1", worker_id="w1"))
    assert leader.dispatcher.inflight[("p", "a.py")].dispatch_id == "d1"


def test_logged_dispatches_are_sent_without_the_linger() -> None:
    """A slot waits on the dispatch: the pump ends the producer's linger once it logged
    some (`Emitter.urge`), and leaves it alone when it logged none."""
    async def go() -> list[int]:
        sim = Sim()
        urged: list[int] = []
        sim.ports.emit._urge = lambda: urged.append(len(sim.log.topics[T.EVENTS]))
        leader = sim.proc.leader
        sim.worker.heartbeat()
        await sim.proc.on_heartbeat_record(sim.log.topics[T.WORKERS][-1])
        leader.elected(0)
        await leader.pump()  # nothing ready: nothing logged, nothing urged
        leader.apply(entry(1, "ready"))
        await leader.pump()
        return urged

    urged = asyncio.run(go())
    assert len(urged) == 1 and urged[0] >= 1  # once, after the TaskDispatched was queued
