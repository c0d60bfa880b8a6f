"""The processor's table stores (`streams.edge.state`): a redelivered event writes its own
records again, one plan's tasks are listed without touching the others', and a processor
restarted on a RocksDB store starts from the changelog offsets its databases hold."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.streams import _current_event
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.scheduling import fold as F
from devline.settings import Settings
from streams.edge.state import (
    MemoryStore,
    OneLookupTable,
    RocksStore,
    TaskView,
    _PlanIndexed,
    plan_state,
    save_header,
    table_store,
)


# -- a redelivered event writes its own records again ------------------------------------
class Recording(dict[str, Any]):
    """A table that records its writes (a Faust table sends each one to its changelog)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes.append(key)
        super().__setitem__(key, dict(value))

    def __delitem__(self, key: str) -> None:
        self.writes.append(f"-{key}")
        super().__delitem__(key)


def task(t: str, deps: list[str]) -> dict[str, Any]:
    return {"task_id": t, "path": f"{t}.py", "language": "python", "description": "",
            "depends_on": deps, "content": None, "cost": 1.0, "priority": 1.0, "level": 0,
            "executor": "demo", "simulate": None}


ACCEPTED = {"plan_id": "p", "project": "demo", "name": "demo", "accepted_at": 0,
            "options": {}, "tasks": [task("a", []), task("b", ["a"])]}
DISPATCHED = {"event_id": "d", "plan_id": "p", "task_id": "a", "path": "a.py", "kind": "dev",
              "attempt": 1, "worker_id": "w", "partition": 0, "dispatch_id": "x",
              "dispatched_at": 1}
COMPLETED = {"event_id": "c", "plan_id": "p", "task_id": "a", "path": "a.py", "attempt": 1,
             "worker_id": "w", "dispatch_id": "x", "executor": "demo", "cache_key": "k",
             "content": "", "content_hash": "h", "size": 0, "cached": False,
             "started_at": 2, "finished_at": 2}


def handle(plans: Recording, tasks: Recording, event_type: str, event: dict[str, Any],
           seq: int) -> list[str]:
    """What `Processor.handle` does with the tables for one event; the writes it made."""
    plans.writes.clear()
    tasks.writes.clear()
    state = plan_state(plans, tasks, "p")
    before = dict(state.header) if state.header else None
    F.apply(state, event_type, event, seq)
    save_header(plans, state, before)
    return plans.writes + tasks.writes


def test_a_redelivered_event_writes_again_the_records_it_wrote() -> None:
    plans, tasks = Recording(), Recording()
    assert handle(plans, tasks, "PlanAccepted", ACCEPTED, 1) == ["p", "p/a", "p/b"]
    assert handle(plans, tasks, "TaskDispatched", DISPATCHED, 5) == ["p/a"]
    kept = dict(tasks["p/a"])
    # Delivered again (the crash came after the local write): the fold finds seq == 5 and
    # changes nothing, but the record goes out again, the same value.
    assert handle(plans, tasks, "TaskDispatched", DISPATCHED, 5) == ["p/a"]
    assert tasks["p/a"] == kept
    # The plan's creation, delivered again: the header and both tasks it created.
    assert handle(plans, tasks, "PlanAccepted", ACCEPTED, 1) == ["p", "p/b"]


def test_records_a_later_event_changed_are_left_alone() -> None:
    plans, tasks = Recording(), Recording()
    handle(plans, tasks, "PlanAccepted", ACCEPTED, 1)
    handle(plans, tasks, "TaskDispatched", DISPATCHED, 5)
    assert handle(plans, tasks, "TaskCompleted", COMPLETED, 7) == ["p", "p/a", "p/b"]
    # seq 7 > 5: the dispatch is older than the record; nothing is written.
    assert handle(plans, tasks, "TaskDispatched", DISPATCHED, 5) == []
    # seq 1 < 7 for a, b and the header: the creation is not redone either.
    assert handle(plans, tasks, "PlanAccepted", ACCEPTED, 1) == []
    # The completion itself, again: its header and both tasks.
    assert handle(plans, tasks, "TaskCompleted", COMPLETED, 7) == ["p", "p/a", "p/b"]
    assert plans["p"]["done"] == 1  # written again, not counted again


def test_a_first_delivery_writes_each_record_once() -> None:
    plans, tasks = Recording(), Recording()
    handle(plans, tasks, "PlanAccepted", ACCEPTED, 1)
    view = TaskView(tasks, "p")
    state = F.PlanState(dict(plans["p"]), view)
    F.apply(state, "TaskDispatched", DISPATCHED, 5)
    assert view.rewrite_own(5) == 0  # it wrote a itself; b was read at seq 1


class Counting(dict[str, Any]):
    """A table that counts the reads that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key: str, default: Any = None, /) -> Any:
        self.reads += 1
        return super().get(key, default)


def test_a_view_reads_a_task_from_the_table_once_and_not_after_it_writes_it() -> None:
    tasks = Counting()
    dict.__setitem__(tasks, "p/a", {"status": "ready", "spec": {"path": "a.py"}})
    view = TaskView(tasks, "p")
    first, second = view["a"], view.get("a")
    assert tasks.reads == 1 and first == second
    first["status"] = "changed"  # a copy: the next reader sees what the table holds
    assert view["a"]["status"] == "ready"
    written = {**first, "status": "dispatched"}
    view["a"] = written
    assert dict.__getitem__(tasks, "p/a")["status"] == "dispatched"  # written through
    written["status"] = "changed after the write"  # the caller's object is not the view's
    assert view["a"]["status"] == "dispatched" and tasks.reads == 1  # read back as written
    del view["a"]
    assert view.get("a") is None and tasks.reads == 2


# -- one plan's tasks, listed without the others -------------------------------------------
@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes | None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class Event:
    message: Message


@contextlib.contextmanager
def handling(partition: int) -> Iterator[Event]:
    """Inside a stream event of `partition` (what a Faust agent sets for each event)."""
    event = Event(Message("events", partition, 0, b"", b""))
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    try:
        yield event
    finally:
        _current_event.reset(token)


def rocks_table(tmp_path: Path, partitions: int = 4) -> tuple[Any, RocksStore]:
    app = faust.App("test-store", broker="kafka://127.0.0.1:1", datadir=str(tmp_path),
                    store=table_store("rocksdb"))
    table = app.Table("tasks", default=None, partitions=partitions, key_type=str)
    store = table.data
    assert isinstance(store, RocksStore)
    store._actives = frozenset(range(partitions))  # as a rebalance assigning them all would
    return table, store


def recover(store: RocksStore, topic: str, partition: int, records: list[tuple[str, Any]],
            first: int = 0) -> None:
    """Apply changelog records to the store, as Faust's recovery does."""
    batch = [Event(Message(topic, partition, first + i, store._encode_key(k),
                           None if v is None else store._encode_value(v)))
             for i, (k, v) in enumerate(records)]
    store.apply_changelog_batch(batch, lambda k: k, lambda v: v)


def test_rocksdb_lists_one_plans_tasks_by_seek(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    table, store = rocks_table(tmp_path)
    topic = table.changelog_topic_name
    for p in range(4):  # 20,000 tasks of 400 other plans, over every partition
        recover(store, topic, p, [(f"other{p}-{i}/t{j}", {"seq": 1})
                                  for i in range(100) for j in range(50)])
    with handling(2):
        for t in ("a.py", "pkg/b.py", "c.py"):
            store[f"mine/{t}"] = {"seq": 3, "status": "ready"}
        store["mine-not/x.py"] = {"seq": 3}  # shares the characters, not the plan
    decoded = 0
    decode = store._decode_key

    def counting(key: bytes | None) -> Any:
        nonlocal decoded
        decoded += 1
        return decode(key)

    monkeypatch.setattr(store, "_decode_key", counting)
    view = TaskView(store, "mine")
    assert sorted(iter(view)) == ["a.py", "c.py", "pkg/b.py"]
    assert decoded == 3  # the others were never read
    assert len(view) == 3 and view["pkg/b.py"]["status"] == "ready"


def test_rocksdb_finds_a_key_from_any_partitions_event(tmp_path: Path) -> None:
    """The pump and the timers read plans of other partitions than the event's."""
    _, store = rocks_table(tmp_path)
    with handling(1):
        store["p/a.py"] = {"seq": 1}
    with handling(3):
        assert store.get("p/a.py") == {"seq": 1}
        assert "p/a.py" in store
        del store["p/a.py"]
    assert store.get("p/a.py") is None
    store._key_index.clear()
    with handling(2):
        store["q/x"] = {"seq": 2}
    assert store.get("q/x") == {"seq": 2}  # outside any event (a timer)


def test_a_table_read_is_one_store_lookup(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    app = faust.App("test-get", broker="kafka://127.0.0.1:1", datadir=str(tmp_path),
                    store=table_store("rocksdb"), Table=OneLookupTable)
    table = app.Table("tasks", default=None, partitions=2, key_type=str)
    store: Any = table.data
    store._actives = frozenset(range(2))

    async def write() -> None:  # a table write queues its changelog record on a loop
        with handling(1):
            table["p/a"] = {"seq": 1}

    asyncio.run(write())  # its own loop: an earlier test's asyncio.run left none current
    lookups = 0
    get = store._get

    def counting(key: bytes) -> Any:
        nonlocal lookups
        lookups += 1
        return get(key)

    monkeypatch.setattr(store, "_get", counting)
    assert table.get("p/a") == {"seq": 1} and lookups == 1
    assert table.get("p/b") is None and table.get("p/b", "none") == "none"
    assert table["p/a"] == {"seq": 1}  # the rest of the mapping as Faust has it


def test_rocksdb_keeps_data_and_changelog_offsets_across_a_restart(tmp_path: Path) -> None:
    table, store = rocks_table(tmp_path)
    topic = table.changelog_topic_name
    recover(store, topic, 0, [("p/a", {"seq": 1}), ("p/b", {"seq": 2}), ("p/a", None)],
            first=40)
    asyncio.run(store.stop())  # closes the databases: the next process may open them
    _, again = rocks_table(tmp_path)
    assert again.persisted_offset(TP(topic, 0)) == 42  # Faust reads the changelog from 43
    assert again.persisted_offset(TP(topic, 1)) is None
    assert sorted(TaskView(again, "p")) == ["b"]


def test_a_revoked_partition_is_closed_and_no_longer_read(tmp_path: Path) -> None:
    table, store = rocks_table(tmp_path, partitions=2)
    with handling(1):
        store["p/a"] = {"seq": 1}
    store.revoke_partitions(table, {TP(table.changelog_topic_name, 1)})
    store._actives = frozenset({0})
    assert store.get("p/a") is None and list(TaskView(store, "p")) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "del", "pop", "update", "clear"]),
                          st.sampled_from(["p/a", "p/b", "q/a", "p", "pq/a", "p/a/b"])),
                max_size=30))
def test_the_memory_stores_index_follows_every_write(ops: list[tuple[str, str]]) -> None:
    indexed, plain = _PlanIndexed(), dict[str, int]()
    for i, (op, key) in enumerate(ops):
        for d in (indexed, plain):
            if op == "set":
                d[key] = i
            elif op == "del" and key in d:
                del d[key]
            elif op == "pop":
                d.pop(key, None)
            elif op == "update":
                d.update([(key, i)])
            elif op == "clear":
                d.clear()
    assert indexed == plain
    for prefix in ("p/", "q/", "pq/", "p"):
        assert sorted(indexed.with_prefix(prefix)) == sorted(k for k in plain
                                                             if k.startswith(prefix))


def test_the_memory_store_lists_by_its_index(tmp_path: Path) -> None:
    app = faust.App("test-mem", broker="kafka://127.0.0.1:1", datadir=str(tmp_path),
                    store=table_store("memory"))
    store = app.Table("tasks", default=None, partitions=4, key_type=str).data
    assert isinstance(store, MemoryStore)
    for i in range(1000):
        store[f"other{i}/x"] = {"seq": 1}
    store["mine/a"] = store["mine/b"] = {"seq": 1}
    assert sorted(TaskView(store, "mine")) == ["a", "b"]
    assert store.data.heads["mine/"] == {"mine/a": None, "mine/b": None}  # type: ignore[attr-defined]


# -- a restarted processor starts from the offsets its databases hold --------------------
@pytest.mark.kafka
def test_a_stopped_processor_has_every_changelog_offset_in_its_databases(
        topics: Settings) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from rocksdict import AccessType, Rdict

    from streams import topics as T
    from tests.harness import running_pipeline, submit, wait_for

    settings = topics
    files = [{"path": f"m{i}.py", "content": f"X = {i}\n"} for i in range(8)]
    with running_pipeline(settings, workers=1):
        plan_id = submit(settings, {"project": "ts", "name": "store", "files": files})
        wait_for(settings, plan_id, {"PlanCompleted"}, timeout=90)
    # Stopped (SIGTERM). Faust reads a changelog partition from the offset after the one
    # its database says it holds: for each, that must be the partition's last record.
    # One state directory per processor instance (devline run names its processor).
    (tables,) = (settings.data_dir / (settings.topic_prefix or "default") / "faust").glob(
        "*/v1/tables")

    async def ends() -> dict[tuple[str, int], int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(settings.topic(T.changelog(t)), p)
                   for t in ("plans", "tasks") for p in range(settings.event_partitions)]
            return {(tp.topic, tp.partition): end
                    for tp, end in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    checked = 0
    for (topic, partition), end in asyncio.run(ends()).items():
        if end == 0:
            continue
        name = "plans" if topic.endswith("plans-changelog") else "tasks"
        db = Rdict(str(tables / f"{name}-{partition}.db"), access_type=AccessType.read_only())
        try:
            assert db.get(RocksStore.offset_key) == str(end - 1).encode(), (topic, partition)
        finally:
            db.close()
        checked += 1
    assert checked >= 2  # at least the plan's partition of both tables


def test_held_headers_write_once_per_batch_and_are_read_back_meanwhile() -> None:
    from streams.edge.state import HeldHeaders

    class Writes(dict[str, Any]):
        def __init__(self) -> None:
            super().__init__()
            self.writes = 0

        def __setitem__(self, key: str, value: Any) -> None:
            self.writes += 1
            super().__setitem__(key, value)

    table = Writes()
    table["old"] = {"n": 0}
    plans = HeldHeaders(table)
    plans.holding = True
    for n in range(1, 6):  # five events of one plan in a batch
        plans["p"] = {"n": n}
        assert plans.get("p") == {"n": n} and plans["p"] == {"n": n}
    del plans["old"]
    assert plans.get("old") is None and "old" in table  # held, not yet written
    assert dict(plans.items()) == {"p": {"n": 5}}
    assert table.writes == 1  # only the setup's
    plans.holding = False
    assert plans.flush() == 2
    assert dict(table) == {"p": {"n": 5}} and table.writes == 2
    plans["q"] = {"n": 1}  # outside a batch: written at once
    assert table["q"] == {"n": 1} and table.writes == 3 and not plans.held
