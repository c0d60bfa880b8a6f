"""`devline run` against the real broker: the pool follows the load, SIGTERM loses nothing.

The burst test caps the pool at six workers: with the processor, the broker and the test
itself, that is as much as a two-core CI machine runs without the timings turning to noise.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from devline.errors import DecodeError
from devline.launch import running
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import records
from tests.harness import events, plan_events, submit, wait_for

MIN, MAX = 2, 6


def supervised(settings: Settings, args: list[str], log: Path) -> Any:
    """`devline run ARGS` in its own process group; stopped (SIGTERM, then SIGKILL) on exit."""
    return running(settings, args, log)


def metric_points(settings: Settings, source: str, name: str) -> list[tuple[int, float]]:
    """(at ms, value) of one metric, oldest first."""
    return sorted((v["at"], v["value"]) for _, et, v in events(settings, T.METRICS, idle=0.3)
                  if et == "MetricPoint" and v["source"] == source and v["name"] == name)


def wait_until(what: str, check: Any, timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout}s")


class Follow:
    """Tail devline.events in a thread, so a test can act the moment something happens."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.done: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Follow:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def completed(self, plan_id: str) -> set[str]:
        return set(self.done.get(plan_id, ()))

    async def _run(self) -> None:
        tail = asyncio.create_task(self._tail())
        stop = asyncio.create_task(asyncio.to_thread(self._stop.wait))
        await asyncio.wait({tail, stop}, return_when=asyncio.FIRST_COMPLETED)
        tail.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tail

    async def _tail(self) -> None:
        codec = Codec.from_settings(self.settings)
        async for record in records(self.settings, T.EVENTS, follow=True):
            with contextlib.suppress(DecodeError):
                et, v = codec.decode(record.value or b"")
                if et == "TaskCompleted":
                    self.done.setdefault(v["plan_id"], set()).add(v["task_id"])


def independent_plan(name: str, n: int, duration: float) -> dict[str, Any]:
    return {"project": name, "name": name, "files": [
        {"path": f"m{i:03d}.py", "content": f"X{i} = {i}\n", "simulate": {"duration_s": duration}}
        for i in range(n)]}


def completions(evs: list[tuple[Any, str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    done: dict[str, list[dict[str, Any]]] = {}
    for _, et, v in evs:
        if et == "TaskCompleted":
            done.setdefault(v["task_id"], []).append(v)
    return done


def check_once_each(evs: list[tuple[Any, str, dict[str, Any]]], tasks: set[str]) -> int:
    """Every task completed; extra completions are redeliveries of identical work.

    Return how many extra (redelivered) completions the log holds.
    """
    done = completions(evs)
    assert set(done) == tasks, f"lost: {sorted(tasks - set(done))}"
    extra = 0
    for task_id, runs in done.items():
        first = runs[0]
        for again in runs[1:]:
            extra += 1
            assert (again["content_hash"], again["attempt"]) == (
                first["content_hash"], first["attempt"]), task_id
    return extra


def test_a_burst_scales_the_pool_to_max_and_idle_brings_it_back_to_min(
    topics: Settings, tmp_path: Path,
) -> None:
    settings = topics
    n = 200
    args = ["--min-workers", str(MIN), "--max-workers", str(MAX), "--scale-down-window", "5",
            "--scale-target", "2"]
    with supervised(settings, args, tmp_path / "run.log"):
        # Submit once the processor reports load and the supervisor its pool: the figures
        # below then time the scaler, not process start-up.
        wait_until("first load and pool metrics", lambda: metric_points(
            settings, "scheduler", "backlog") and metric_points(
            settings, "supervisor", "replicas_current"), timeout=60)
        submitted = int(time.time() * 1000)
        plan_id = submit(settings, independent_plan("burst", n, 0.5))
        kind, done = wait_for(settings, plan_id, {"PlanCompleted", "PlanRejected"}, timeout=90)
        assert kind == "PlanCompleted"
        finished = int(time.time() * 1000)

        def back_to_min() -> list[tuple[int, float]]:
            points = metric_points(settings, "supervisor", "replicas_current")
            late = [p for p in points if p[0] >= finished]
            return points if late and late[-1][1] == MIN else []

        current = wait_until("pool back to the minimum", back_to_min, timeout=40)
        desired = metric_points(settings, "supervisor", "replicas_desired")
    log = (tmp_path / "run.log").read_text(errors="replace")

    during = [(at, v) for at, v in current if at >= submitted]
    peak = max(v for _, v in during)
    assert peak >= MAX - 1, f"pool peaked at {peak}"
    assert max(v for at, v in desired if at >= submitted) == MAX
    t_max = next(at for at, v in during if v >= MAX - 1)
    t_min = next(at for at, v in during if at > t_max and v == MIN)
    assert "scale up 2 -> 6: scale up: load" in log
    assert "scale down" in log and "drained and exited with 0" in log
    assert "restarting" not in log  # drained workers are not restarted

    assert done["files"] == n and done["executor_runs"] == n and done["failed"] == 0
    evs = plan_events(settings, plan_id)
    dispatched = Counter(v["task_id"] for _, et, v in evs if et == "TaskDispatched")
    assert set(dispatched.values()) == {1}, "a task was dispatched twice"
    redelivered = check_once_each(evs, {f"m{i:03d}.py" for i in range(n)})
    print(f"\nburst of {n} x 0.5s: pool {MIN}->{peak:g} (max {MAX}) "
          f"{(t_max - submitted) / 1000:.1f}s after submit; plan done in "
          f"{(finished - submitted) / 1000:.1f}s; back to {MIN} "
          f"{(t_min - finished) / 1000:.1f}s after it finished "
          f"({(t_min - t_max) / 1000:.1f}s after reaching max); "
          f"{redelivered} redelivered completion(s)")


def test_sigterm_mid_run_exits_zero_and_a_restart_finishes_the_plan(
    topics: Settings, tmp_path: Path,
) -> None:
    settings = topics
    n = 30
    plan = independent_plan("drain", n, 0.3)
    for i, f in enumerate(plan["files"]):
        if i >= 5:  # six layers of five: work is still queued when the signal lands
            f["content"] = f"from m{i - 5:03d} import X{i - 5}\nX{i} = X{i - 5} + 1\n"
    tasks = {f["path"] for f in plan["files"]}
    args = ["--min-workers", "2", "--max-workers", "4", "--scale-down-window", "5",
            "--worker-grace", "20"]
    log = tmp_path / "run.log"

    with supervised(settings, args, log) as proc, Follow(settings) as follow:
        plan_id = submit(settings, plan)
        wait_until("a few tasks done", lambda: len(follow.completed(plan_id)) >= 6,
                   timeout=60, every=0.05)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        stop_s = time.monotonic() - signalled
    assert code == 0
    evs = plan_events(settings, plan_id)
    done_before = len(completions(evs))
    assert not any(et == "PlanCompleted" for _, et, _ in evs), "finished before the signal"
    left = n - len(completions(evs))

    with supervised(settings, args, log) as proc:
        _, done = wait_for(settings, plan_id, {"PlanCompleted"}, timeout=90)
    assert proc.returncode == 0
    assert done["files"] == n and done["failed"] == 0
    assert done["executor_runs"] + done["cache_hits"] == n
    redelivered = check_once_each(plan_events(settings, plan_id), tasks)
    print(f"\nSIGTERM after {done_before}/{n} done: exit 0 in {stop_s:.1f}s, {left} left; "
          f"restart finished the plan; {redelivered} redelivered completion(s)")


def test_the_pool_obeys_an_acted_ops_scale_decision(topics: Settings, tmp_path: Path) -> None:
    from streams.client import produce

    settings = topics
    args = ["--min-workers", "1", "--max-workers", "3", "--test-workers", "0"]
    with supervised(settings, args, tmp_path / "run.log"):
        wait_until("the pool at its minimum", lambda: any(
            v == 1 for _, v in metric_points(settings, "supervisor", "replicas_current")), 60)
        asyncio.run(produce(settings, T.OPS, "OpsDecision", {
            "decision_id": "o-e2e", "plan_id": None, "action": "scale",
            "reason": "worker target 1 -> 3", "at": int(time.time() * 1000),
            "params": {"replicas": "3", "acted": "true", "target": "pool"}}, key="pool"))
        wait_until("three workers", lambda: any(
            v == 3 for _, v in metric_points(settings, "supervisor", "replicas_current")), 60)
    assert "ops decision o-e2e" in (tmp_path / "run.log").read_text()
