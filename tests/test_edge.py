"""The edge's failure policy and dispatch memory, on in-memory ports (no broker)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from agents.scheduling.stale import stale_reason
from devline.errors import WorkspaceError
from devline.settings import Settings
from streams import topics as T
from streams.edge.fake import Crash, CrashPlan
from streams.edge.persist import BUG_TRIES, Unexpected, persist
from streams.sink import Materializer
from tests.sim import Sim

log = logging.getLogger("test")


async def _no_sleep(_: float) -> None:
    return None


def plan(plan_id: str = "p1", files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"plan_id": plan_id, "project": "edge", "name": plan_id,
            "files": files or [{"path": "a.py", "content": "A = 1\n"},
                               {"path": "b.py", "content": "from a import A\n"}]}


# -- our own failures ------------------------------------------------------------------
def test_a_send_that_keeps_failing_is_retried_until_it_goes_through() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 30:
            raise KafkaTimeoutError("broker away")
        return "sent"

    assert asyncio.run(persist(flaky, what="send", log=log, sleep=_no_sleep)) == "sent"
    assert len(calls) == 30  # never given up on, never blamed on the record


def test_a_bug_is_retried_a_few_times_then_reported() -> None:
    calls = []

    async def broken() -> None:
        calls.append(1)
        raise KeyError("spec")

    with pytest.raises(Unexpected, match="KeyError"):
        asyncio.run(persist(broken, what="fold", log=log, sleep=_no_sleep))
    assert len(calls) == BUG_TRIES


def test_failed_sends_while_handling_a_valid_record_lose_nothing() -> None:
    """Every send fails 3 times before it goes through: the plan still completes, nothing is
    dead-lettered, every task ran once."""

    async def go() -> Sim:
        sim = Sim()
        real = sim.log.send
        failures: dict[tuple[str, bytes, str], int] = {}

        async def flaky(topic: str, **kw: Any) -> None:
            # Each kind of record for each key fails 3 times, then goes through.
            n = (topic, kw["key"] or b"", str(kw["headers"]))
            failures[n] = failures.get(n, 0) + 1
            if failures[n] <= 3 and topic != T.WORKERS:
                raise KafkaTimeoutError(f"send to {topic} failed")
            await real(topic, **kw)

        sim.ports.emit._send = flaky
        sim.submit(plan())
        await sim.run(lambda s: s.reported("p1"))
        return sim

    sim = asyncio.run(go())
    assert sim.log.topics[T.DLQ] == []
    assert sim.outcome()["plans"]["p1"]["done"] == 2
    assert set(sim.outcome()["runs"].values()) == {1}


def test_a_record_that_trips_a_bug_is_parked_and_the_stream_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.edge import effects

    async def go() -> Sim:
        sim = Sim()
        sim.submit(plan("p1"))
        original = effects.Effects.plan_done

        async def boom(self: Any, state: Any) -> None:
            if state.header["plan_id"] == "p1":
                raise ZeroDivisionError("a bug")
            await original(self, state)

        monkeypatch.setattr(effects.Effects, "plan_done", boom)
        await sim.run(lambda s: s.plan("p1").get("status") == "done"
                      and s.pos >= len(s.log.topics[T.EVENTS]))
        sim.submit(plan("p2", [{"path": "z.py", "content": "Z = 1\n"}]))
        await sim.run(lambda s: s.reported("p2"))
        return sim

    sim = asyncio.run(go())
    (letter,) = sim.log.topics[T.DLQ]
    assert letter.header("dlq-reason").startswith("processing failed (a devline bug")
    assert "ZeroDivisionError" in letter.header("dlq-reason")


def test_records_that_are_not_valid_events_go_to_the_dlq_with_the_reason() -> None:
    async def go() -> Sim:
        sim = Sim()
        sim.log.append(T.EVENTS, b"p9", b"\x00garbage")
        pid = sim.submit(plan())
        rec = sim.log.topics[T.EVENTS][-1]
        sim.log.append(T.EVENTS, b"wrong-key", rec.value, list(rec.headers))
        await sim.run(lambda s: s.reported(pid))
        return sim

    sim = asyncio.run(go())
    reasons = [r.header("dlq-reason") or "" for r in sim.log.topics[T.DLQ]]
    assert len(reasons) == 2
    assert reasons[0].startswith("undecodable")
    assert "not by its plan id" in reasons[1]


# -- dispatch memory ---------------------------------------------------------------------
def test_nothing_is_dispatched_before_the_log_is_read_to_its_end() -> None:
    async def go() -> Sim:
        sim = Sim()
        sim.submit(plan())
        await sim.run(lambda s: len(s.log.topics[T.WORK_DEV]) == 1)
        # A new processor whose partition ends far beyond its committed offset.
        sim.committed = 0
        await sim.restart()
        logged = len(sim.events("TaskDispatched"))
        while not sim.proc.ready:
            sim.worker.heartbeat()
            await sim.step()
            assert await sim.proc.pump() == 0
        assert len(sim.events("TaskDispatched")) == logged
        await sim.run(lambda s: s.reported("p1"))
        return sim

    sim = asyncio.run(go())
    items = [sim.codec.decode(r.value or b"")[1] for r in sim.log.topics[T.WORK_DEV]]
    ids = {(i["task_id"], i["dispatch_id"]) for i in items}
    assert sorted(t for t, _ in ids) == ["a.py", "b.py"]  # a resent copy, never a 2nd dispatch
    assert set(sim.outcome()["runs"].values()) == {1}


def test_a_catch_up_that_cannot_finish_gives_up_after_a_minute_with_the_link_up() -> None:
    async def go() -> tuple[Sim, list[float]]:
        sim = Sim()
        sim.submit(plan(files=[{"path": "a.py", "content": "A = 1\n"}]))
        # The end offset says 5 records the log no longer has (truncated under us).
        await sim.proc.on_assigned({0: 5}, {0: 0})
        sim.proc.leader.elected(0)
        sim.started = True
        await sim.step()  # the one record there is: read, but short of the end
        waited = []
        while not sim.proc.ready:
            sim.clock.advance(1.0)
            sim.worker.heartbeat()
            await sim.proc.tick()
            workers = sim.log.topics[T.WORKERS]  # the probe echo: the link is up
            while sim.hb_pos < len(workers):
                await sim.proc.on_heartbeat_record(workers[sim.hb_pos])
                sim.hb_pos += 1
            waited.append(sim.clock.now())
            assert len(waited) < 200, "never gave up"
        await sim.run(lambda s: s.reported("p1"))
        return sim, waited

    sim, waited = asyncio.run(go())
    assert 60 <= waited[-1] - waited[0] <= 63
    assert len(sim.outcome()["runs"]) == 1 and set(sim.outcome()["runs"].values()) == {1}


def test_a_dispatch_whose_worker_vanished_is_reopened_once_after_the_lease() -> None:
    async def go() -> Sim:
        sim = Sim()
        sim.submit(plan(files=[{"path": "a.py", "content": "A = 1\n"}]))
        sim.worker.step = lambda: False  # type: ignore[method-assign]  # w1 dies silently
        await sim.run(lambda s: len(s.log.topics[T.WORK_DEV]) == 1)
        sim.worker.heartbeat = lambda: None  # type: ignore[method-assign]
        for _ in range(40):  # 40 s of silence from w1; the processor hears itself
            sim.clock.advance(1.0)
            await sim.proc.tick()
            await sim.step()
        return sim

    sim = asyncio.run(go())
    ready = [ev for et, ev in sim.events("TaskReady")]
    assert len(ready) == 1 and ready[0]["task_id"] == "a.py"


def test_a_broker_outage_pauses_worker_expiry_and_leases() -> None:
    async def go() -> Sim:
        sim = Sim()
        sim.submit(plan(files=[{"path": "a.py", "content": "A = 1\n"}]))
        sim.worker.step = lambda: False  # type: ignore[method-assign]
        await sim.run(lambda s: len(s.log.topics[T.WORK_DEV]) == 1)
        for _ in range(60):  # the link is down: no probe comes back, no heartbeat either
            sim.clock.advance(1.0)
            await sim.proc.tick()
            sim.log.topics[T.WORKERS].clear()
            sim.hb_pos = 0
        assert sim.proc.dispatcher.workers  # w1 not declared gone
        return sim

    sim = asyncio.run(go())
    assert sim.events("TaskReady") == []


# -- workers -------------------------------------------------------------------------------
def test_a_work_item_is_stale_once_the_log_moved_past_it() -> None:
    item = {"dispatch_id": "d1", "plan_id": "p", "task_id": "a.py"}
    assert stale_reason(item, [("TaskDispatched", {"dispatch_id": "d1"})], []) is None
    assert "already ran" in (stale_reason(item, [("TaskCompleted", {"dispatch_id": "d1"})],
                                          []) or "")
    assert "superseded: TaskReady" in (stale_reason(item, [("TaskReady", {"attempt": 1})],
                                                    []) or "")
    assert "running on w2" in (stale_reason(item, [], ["w2"]) or "")
    # A second dispatch the fold refused (two dispatchers for a moment) changes nothing.
    assert stale_reason(item, [("TaskDispatched", {"dispatch_id": "d2", "attempt": 1})],
                        []) is None


def test_the_sink_writes_each_file_once_and_leaves_equal_files_alone(tmp_path: Path) -> None:
    from streams.edge.fake import CrashPlan, FakeStore

    async def go() -> Materializer:
        store = FakeStore(CrashPlan())
        sink = Materializer(tmp_path, store)
        data = b"X = 1\n"
        digest = await store.put(data)
        ev = {"plan_id": "p", "project": "proj", "path": "pkg/x.py", "content": None,
              "content_hash": digest}
        for _ in range(3):  # redelivered twice
            await sink.materialize(ev)
        return sink

    sink = asyncio.run(go())
    assert (tmp_path / "proj" / "pkg" / "x.py").read_bytes() == b"X = 1\n"
    assert (sink.written, sink.unchanged) == (1, 2)


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts asyncio.to_thread calls (one element, bumped per call)."""
    count = [0]
    to_thread = asyncio.to_thread

    async def counting(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await to_thread(*args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    return count


def test_the_sink_writes_a_file_the_event_carries_in_one_thread_hop(
        tmp_path: Path, hops: list[int]) -> None:
    from streams.artifacts import sha256
    from streams.edge.fake import CrashPlan, FakeStore


    async def go() -> Materializer:
        sink = Materializer(tmp_path, FakeStore(CrashPlan()))  # an empty store
        content = "X = 1\n"
        ev = {"plan_id": "p", "project": "proj", "path": "pkg/x.py", "content": content,
              "content_hash": sha256(content.encode())}
        for _ in range(2):  # redelivered once
            await sink.materialize(ev)
        assert hops[0] == 2
        with pytest.raises(WorkspaceError):
            await sink.materialize({**ev, "path": "../../outside.py"})
        return sink

    sink = asyncio.run(go())
    assert (tmp_path / "proj" / "pkg" / "x.py").read_bytes() == b"X = 1\n"
    assert (sink.written, sink.unchanged) == (1, 1)
    assert not (tmp_path.parent / "outside.py").exists()


def test_the_sink_writes_a_fetched_batch_in_one_hop_and_isolates_a_bad_path(
        tmp_path: Path, hops: list[int], caplog: pytest.LogCaptureFixture) -> None:
    from streams.artifacts import sha256
    from streams.edge.fake import CrashPlan, FakeStore
    from streams.edge.ports import RawRecord
    from streams.emit import headers_for
    from streams.sink import FileSink

    settings = Settings(workspace=tmp_path / "ws", data_dir=tmp_path / "data")
    sink = FileSink(settings, FakeStore(CrashPlan()))
    codec = sink.codec

    def completed(i: int, path: str) -> RawRecord:
        content = f"X = {i}\n"
        ev = {"event_id": f"e{i}", "plan_id": "p", "task_id": f"t{i}", "path": path,
              "attempt": 1, "worker_id": "w", "dispatch_id": f"d{i}", "executor": "demo",
              "cache_key": "k", "content": content, "content_hash": sha256(content.encode()),
              "size": len(content), "cached": False, "started_at": 1, "finished_at": 2,
              "tokens": None, "cost": None, "project": "proj"}
        return RawRecord(topic="devline.events", partition=0, offset=i, key=b"p",
                         value=codec.encode("TaskCompleted", ev),
                         headers=headers_for("TaskCompleted", ev))

    good = [completed(i, f"m{i}.py") for i in range(5)]
    asyncio.run(sink.handle_many(good))
    assert hops[0] == 1  # five files, one thread hop
    assert sorted(p.name for p in (tmp_path / "ws" / "proj").iterdir()) == [
        f"m{i}.py" for i in range(5)]
    bad = [completed(5, "n5.py"), completed(6, "../../outside.py"), completed(7, "n7.py")]
    asyncio.run(sink.handle_many(bad))
    assert (tmp_path / "ws" / "proj" / "n5.py").read_text() == "X = 5\n"
    assert (tmp_path / "ws" / "proj" / "n7.py").read_text() == "X = 7\n"
    assert not (tmp_path / "outside.py").exists()
    assert any("outside.py not written" in r.getMessage() for r in caplog.records)


def test_every_command_kind_has_a_handler() -> None:
    """A new command kind nobody handles fails here (and mypy's assert_never), not in a
    user's run."""
    from agents.scheduling.model import Cmd, Command

    async def go() -> None:
        sim = Sim()
        sim.submit(plan())
        await sim.run(lambda s: s.reported("p1"))
        from streams.edge.state import plan_state

        for kind in Cmd:
            st = plan_state(sim.ports.plans, sim.ports.tasks, "p1")
            await sim.proc.effects.run(st, Command(kind, "p1", "a.py", fresh=False), None)

    asyncio.run(go())


# -- retention -------------------------------------------------------------------------------
def retire_scenario(crash_at: tuple[int, ...] = ()) -> Sim:
    async def go() -> Sim:
        sim = Sim()
        sim.submit(plan("old"))
        await sim.run(lambda s: s.reported("old"))
        sim.submit(plan("stuck", files=[{"path": "x.py", "content": "X = 1\n",
                                         "simulate": {"duration_s": 0, "fail_first": 9,
                                                      "fail_error": "boom",
                                                      "retryable": False}}]))
        await sim.run(lambda s: s.plan("stuck").get("status") == "stalled")
        sim.submit(plan("young"))
        await sim.run(lambda s: s.reported("young"))
        # The old plan finished 8 days ago, the young one just now.
        old = dict(sim.tables["plans"]["old"])
        sim.tables["plans"]["old"] = {**old, "completed_at": old["completed_at"] - 8 * 86_400_000}
        sim.crash = sim.log.crash = CrashPlan(crash_at)
        for t in sim.tables.values():
            t.crash = sim.crash
        for _ in range(130):  # two sweeps' worth of ticks
            try:
                sim.clock.advance(1.0)
                sim.worker.heartbeat()
                await sim.proc.tick()
                await sim.step()
            except Crash:
                await sim.restart()
        await sim.run(lambda s: s.pos >= len(s.log.topics[T.EVENTS]))
        return sim

    return asyncio.run(go())


def test_a_finished_plan_past_its_retention_leaves_the_tables_and_nothing_else_does() -> None:
    sim = retire_scenario()
    retired = sim.events("PlanRetired")
    assert [ev["plan_id"] for _, ev in retired] == ["old"]
    assert "old" not in sim.tables["plans"]
    assert not [k for k in sim.tables["tasks"] if k.startswith("old/")]
    assert sim.plan("young")["status"] == "done" and sim.plan("stuck")["status"] == "stalled"
    assert [k for k in sim.tables["tasks"] if k.startswith("young/")]
    # Off the dispatch board too (tombstones), and out of the dispatcher's memory.
    assert board_tombstones(sim) == {"old/a.py", "old/b.py"}
    assert not [k for k in sim.proc.leader.seqs if k[0] == "old"]
    assert [k for k in sim.proc.leader.seqs if k[0] == "young"]


def board_tombstones(sim: Sim) -> set[str]:
    return {(r.key or b"").decode() for r in sim.log.topics[T.BOARD] if r.value is None}


@pytest.mark.parametrize("step", range(1, 6))
def test_a_crash_halfway_through_a_retirement_is_finished_on_redelivery(step: int) -> None:
    sim = retire_scenario(crash_at=(step,))
    assert sim.restarts == 1  # it did crash there
    assert "old" not in sim.tables["plans"]
    assert not [k for k in sim.tables["tasks"] if k.startswith("old/")]
    assert len({ev["event_id"] for _, ev in sim.events("PlanRetired")}) == 1
    assert board_tombstones(sim) == {"old/a.py", "old/b.py"}
