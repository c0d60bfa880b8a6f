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
    # Its dispatch stays outstanding: the log says so; the lease decides when to re-open it.
    assert d.workers == {} and d.in_flight == 1
    assert d.lost(now=40.0, lease=20.0) == []  # not confirmed by the log: not ours to reopen


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
    from agents.scheduling.dispatch import InFlight

    d = Dispatcher()
    d.worker_seen("alive", capacity=1, partitions=[0], state="busy", now=0.0,
                  running=["p/moved"])
    d.restore([(("p", "gone-worker"), InFlight("dead", "x1", "proj/a", 0.0)),
               (("p", "moved"), InFlight("dead", "x2", "proj/b", 0.0)),
               (("p", "busy"), InFlight("alive", "x3", "proj/c", 0.0)),
               (("p", "recent"), InFlight("dead", "x4", "proj/d", 25.0))], [])
    assert d.lost(now=30.0, lease=20.0) == [("p", "gone-worker")]


def test_capacity_counts_what_workers_report_running_after_a_restart() -> None:
    d = Dispatcher()
    d.add_ready(task("new"))
    # A restarted processor knows nothing it sent; the worker says it runs two tasks.
    d.worker_seen("w", capacity=2, partitions=[0], state="busy", now=0.0,
                  running=["p/old1", "p/old2"])
    assert d.assign(0.0) == []
    d.worker_seen("w", capacity=2, partitions=[0], state="busy", now=1.0, running=["p/old1"])
    assert [a.task.task_id for a in d.assign(1.0)] == ["new"]


def test_a_finished_task_frees_its_slot_before_the_next_heartbeat_says_so() -> None:
    d = Dispatcher()
    d.worker_seen("w", capacity=1, partitions=[0], state="idle", now=0.0)
    d.add_ready(task("a"))
    (first,) = d.assign(0.0)
    d.confirmed(("p", "a"), "w", first.dispatch_id, first.task.path, 0.0)
    d.worker_seen("w", capacity=1, partitions=[0], state="busy", now=0.5, running=["p/a"])
    d.add_ready(task("b"))
    assert d.assign(0.6) == []
    d.task_finished("p", "a")  # its TaskCompleted is in the log; the heartbeat is older
    assert [x.task.task_id for x in d.assign(0.7)] == ["b"]


def test_path_exclusivity_survives_a_restart() -> None:
    from agents.scheduling.dispatch import InFlight

    d = Dispatcher()
    d.restore([(("p1", "a"), InFlight("w", "x", "proj/x.py", 0.0))],
              [task("b", path="proj/x.py"), task("c")])
    d.worker_seen("w", capacity=3, partitions=[0], state="idle", now=0.0)
    assert [a.task.task_id for a in d.assign(0.0)] == ["c"]  # b waits for a's path
    d.task_finished("p1", "a")
    assert [a.task.task_id for a in d.assign(0.0)] == ["b"]


def test_a_reservation_the_log_refused_frees_its_slot_and_path() -> None:
    d = Dispatcher(new_id=lambda: "d1")
    d.add_ready(task("a", path="proj/x.py"))
    d.worker_seen("w", capacity=1, partitions=[0], state="idle", now=0.0)
    (a,) = d.assign(0.0)
    assert a.dispatch_id == "d1" and d.assign(0.0) == []
    assert not d.refused(("p", "a"), "other")  # not ours: kept
    assert d.refused(("p", "a"), "d1")
    d.add_ready(task("b", path="proj/x.py"))
    assert [x.task.task_id for x in d.assign(0.0)] == ["b"]


def test_the_link_clock_stands_still_while_the_link_is_down() -> None:
    from agents.scheduling.dispatch import LinkClock

    clock = LinkClock()
    clock.tick(100.0, True)
    clock.tick(101.0, True)
    clock.tick(131.0, False)  # a 30 s broker outage
    clock.tick(132.0, True)
    assert clock.now() == 2.0
    d = Dispatcher(worker_timeout=15.0)
    d.worker_seen("w", capacity=1, partitions=[0], state="idle", now=0.0)
    assert d.expire_workers(clock.now()) == []  # not expired by the outage
