"""The dispatch policy: priority order, free capacity only, fixes first, one writer per path."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.scheduling.dispatch import Dispatcher, ReadyTask


def task(tid: str, priority: float = 1.0, kind: str = "dev", path: str | None = None) -> ReadyTask:
    return ReadyTask("p", tid, path or f"proj/{tid}", kind, priority, 1, 0.0)


def test_dispatches_only_to_free_capacity_in_priority_order() -> None:
    d = Dispatcher()
    for i, prio in enumerate([1.0, 5.0, 3.0, 4.0]):
        d.add_ready(task(f"t{i}", prio))
    assert d.assign(0.0) == []  # no worker yet: nothing is sent into a partition to wait
    d.worker_seen("w1", capacity=1, partitions=[0, 1], state="idle", now=0.0)
    d.worker_seen("w2", capacity=1, partitions=[2], state="idle", now=0.0)
    first = d.assign(0.0)
    assert [a.task.task_id for a in first] == ["t1", "t3"]
    assert {a.worker_id for a in first} == {"w1", "w2"}
    assert all(a.partition in ([0, 1] if a.worker_id == "w1" else [2]) for a in first)
    assert d.assign(0.0) == []  # both busy
    d.task_finished("p", "t1")
    assert [a.task.task_id for a in d.assign(0.0)] == ["t2"]


def test_fix_work_goes_before_higher_priority_dev_work() -> None:
    d = Dispatcher()
    d.add_ready(task("dev", 100.0))
    d.add_ready(task("fix", 1.0, kind="fix"))
    d.worker_seen("w", capacity=1, partitions=[0], state="idle", now=0.0)
    assert [a.task.task_id for a in d.assign(0.0)] == ["fix"]


def test_two_writers_of_one_path_never_run_at_once() -> None:
    d = Dispatcher()
    d.add_ready(task("a", 2.0, path="proj/x.py"))
    d.add_ready(task("b", 1.0, path="proj/x.py"))
    d.add_ready(task("c", 0.5))
    d.worker_seen("w", capacity=3, partitions=[0], state="idle", now=0.0)
    assert [a.task.task_id for a in d.assign(0.0)] == ["a", "c"]
    d.task_finished("p", "a")
    assert [a.task.task_id for a in d.assign(0.0)] == ["b"]


def test_draining_and_silent_workers_get_nothing() -> None:
    d = Dispatcher(worker_timeout=5.0)
    d.worker_seen("w", capacity=2, partitions=[0], state="draining", now=0.0)
    d.add_ready(task("a"))
    assert d.assign(0.0) == []
    d.worker_seen("w", capacity=2, partitions=[0], state="idle", now=1.0)
    assert len(d.assign(1.0)) == 1
    assert d.expire_workers(10.0) == ["w"]
    assert d.in_flight == 0 and d.workers == {}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.sampled_from(["dev", "fix"])), max_size=30),
       st.lists(st.integers(1, 3), min_size=1, max_size=5))
def test_never_more_in_flight_than_capacity_and_each_task_once(
    tasks: list[tuple[float, str]], capacities: list[int]
) -> None:
    d = Dispatcher()
    for i, (prio, kind) in enumerate(tasks):
        d.add_ready(task(f"t{i}", prio, kind))
        d.add_ready(task(f"t{i}", prio, kind))  # duplicates are ignored
    for i, cap in enumerate(capacities):
        d.worker_seen(f"w{i}", capacity=cap, partitions=[i], state="idle", now=0.0)
    sent: list[str] = []
    while True:
        batch = d.assign(0.0)
        if not batch and d.in_flight == 0:
            break
        assert d.in_flight <= sum(capacities)
        sent += [a.task.task_id for a in batch]
        # Order within a batch: fixes first, then by priority.
        keys = [(a.task.kind != "fix", -a.task.priority) for a in batch]
        assert keys == sorted(keys)
        for a in batch:
            d.task_finished(a.task.plan_id, a.task.task_id)
    assert sorted(sent) == sorted(f"t{i}" for i in range(len(tasks)))


def test_refused_tasks_stay_queued_and_others_take_the_slot() -> None:
    d = Dispatcher()
    d.add_ready(ReadyTask("p", "llm", "proj/llm", "dev", 9.0, 1, 0.0, executor="http"))
    d.add_ready(ReadyTask("p", "local", "proj/local", "dev", 1.0, 1, 0.0, executor="demo"))
    d.worker_seen("w", capacity=1, partitions=[0], state="idle", now=0.0)
    sent = d.assign(0.0, admit=lambda t: t.executor != "http")
    assert [a.task.task_id for a in sent] == ["local"]
    assert d.backlog == 1
    d.task_finished("p", "local")
    assert [a.task.task_id for a in d.assign(0.0)] == ["llm"]


def test_dispatches_lost_with_their_worker_are_found_after_the_lease() -> None:
    d = Dispatcher()
    d.worker_seen("alive", capacity=1, partitions=[0], state="busy", now=0.0,
                  running=["p/moved"])
    outstanding = {("p", "gone-worker"): ("dead", 0.0), ("p", "moved"): ("dead", 0.0),
                   ("p", "busy"): ("alive", 0.0), ("p", "recent"): ("dead", 25.0)}
    assert d.lost(outstanding, now=30.0, lease=20.0) == [("p", "gone-worker")]
