"""The stream processor killed mid-plan: tables recover from their changelogs, nothing is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from agents.scheduling import fold as F
from devline.settings import Settings
from streams.client import replay
from tests.harness import plan_events, running_pipeline, submit, wait_for


def processor_pids(group: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")  # noqa: SIM115
            ours = os.getpgid(int(entry)) == group
            if ours and b"processor" in cmdline and b"devline" in cmdline:
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def test_processor_sigkill_mid_plan_recovers_and_completes(topics: Settings) -> None:
    settings = topics
    files = [{"path": f"m{i:02d}.py", "content": f"X{i} = {i}\n",
              "depends_on": [f"m{i - 5:02d}.py"] if i >= 5 else [],
              "simulate": {"duration_s": 0.2}} for i in range(30)]
    with running_pipeline(settings, workers=2) as run:
        plan_id = submit(settings, {"project": "rs", "name": "restart", "files": files})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = [v for _, et, v in plan_events(settings, plan_id) if et == "TaskCompleted"]
            if len(done) >= 8:
                break
            time.sleep(0.2)
        victims = processor_pids(os.getpgid(run.pid))
        assert len(victims) == 1
        os.kill(victims[0], signal.SIGKILL)
        _, summary = wait_for(settings, plan_id, {"PlanCompleted"}, timeout=120)
        assert processor_pids(os.getpgid(run.pid)) not in ([], victims)  # restarted
        evs = plan_events(settings, plan_id)
    completed: dict[str, int] = {}
    for _, et, v in evs:
        if et == "TaskCompleted":
            completed[v["task_id"]] = completed.get(v["task_id"], 0) + 1
    assert set(completed) == {f["path"] for f in files}  # nothing lost
    assert summary["files"] == 30 and summary["executor_runs"] + summary["cache_hits"] == 30
    state = asyncio.run(replay(settings, plan_id))[plan_id]
    assert state.header["status"] == F.PLAN_DONE
