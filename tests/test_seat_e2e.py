"""One running copy per prefix: two `devline rollouts` (and `devline ops`) processes on the
real broker; Kafka elects one, the other stands by and takes over when it stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path

from devline.settings import Settings
from devline.supervisor import child_env
from streams.seat import run_seated
from tests.harness import ROOT


def test_one_holder_runs_the_stage_and_a_standby_takes_over(topics: Settings) -> None:
    async def go() -> None:
        runs: list[str] = []

        def stage(name: str):  # type: ignore[no-untyped-def]
            async def run(halt: asyncio.Event) -> None:
                runs.append(f"{name} start")
                await halt.wait()
                runs.append(f"{name} stop")
            return run

        stops = {n: asyncio.Event() for n in "ab"}
        a = asyncio.create_task(run_seated(topics, "test", stage("a"), stops["a"]))
        deadline = time.monotonic() + 30
        while runs != ["a start"]:
            assert time.monotonic() < deadline, runs
            await asyncio.sleep(0.1)
        b = asyncio.create_task(run_seated(topics, "test", stage("b"), stops["b"]))
        await asyncio.sleep(3.0)  # b joined; a keeps the seat (a rebalance may move it)
        held = [r for r in runs if r.endswith("start")]
        assert len(held) - len([r for r in runs if r.endswith("stop")]) == 1, runs
        holder = runs[-1].split()[0]
        other = "b" if holder == "a" else "a"
        started = time.monotonic()
        stops[holder].set()  # a clean stop leaves the group: the standby takes over at once
        while runs[-1] != f"{other} start":
            assert time.monotonic() - started < 15, runs
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
        stops[other].set()
        await asyncio.gather(a, b)
        # Never two at once: every start after the first follows the other's stop.
        running = 0
        for r in runs:
            running += 1 if r.endswith("start") else -1
            assert running <= 1, runs
        assert took < 10, took

    asyncio.run(go())


def test_two_rollouts_processes_run_one_stage(topics: Settings, tmp_path: Path) -> None:
    config = tmp_path / "rollout.json"
    config.write_text(json.dumps({"targets": {"sim": {"type": "simulated"}}}))

    async def go() -> None:
        logs = [tmp_path / f"r{i}.log" for i in range(2)]
        procs = []
        for log in logs:
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "devline", "--topic-prefix", topics.topic_prefix,
                "rollouts", "--config", str(config), env=child_env(topics), cwd=ROOT,
                stdout=asyncio.subprocess.DEVNULL, stderr=log.open("wb")))
        try:
            deadline = time.monotonic() + 40
            while True:
                texts = [log.read_text() for log in logs]
                holding = [t for t in texts if "holding the seat" in t]
                waiting = [t for t in texts if "waiting for the seat" in t]
                if holding and len(waiting) == 2:  # both started, one holds
                    break
                assert time.monotonic() < deadline, texts
                await asyncio.sleep(0.3)
            assert len(holding) == 1
            first = texts.index(holding[0])
            procs[first].send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(procs[first].wait(), 30) == 0
            deadline = time.monotonic() + 30
            while "rollouts caught up" not in logs[1 - first].read_text():
                assert time.monotonic() < deadline, logs[1 - first].read_text()
                await asyncio.sleep(0.3)
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
                await asyncio.wait_for(p.wait(), 30)
        assert "holding the seat" in logs[1 - first].read_text()
        assert "rollouts caught up" not in texts[1 - first]  # it stood by until then

    asyncio.run(go())
