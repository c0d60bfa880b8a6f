"""The stream processor SIGKILLed again and again mid-plan: tables recover from their
changelogs, the warm spare takes over, nothing is lost or run twice, and every file on
disk has the hash its TaskCompleted reports."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

from agents.scheduling import fold as F
from devline.settings import Settings
from streams.client import replay
from tests.harness import plan_events, running_pipeline, submit, wait_for

KILLS = 3


def processor_pid(log: Path) -> int | None:
    """The running processor as `devline run` last reported it (a promoted spare keeps its
    `--standby` command line, so the log is the reliable source)."""
    found = None
    for line in log.read_text(errors="replace").splitlines():
        if m := re.search(r"(?:started|promoted its warm spare) processor-0 \(pid (\d+)\)", line):
            found = int(m.group(1))
    return found


def test_processor_sigkilled_mid_plan_loses_nothing_and_runs_nothing_twice(
        topics: Settings, tmp_path: Path) -> None:
    settings = topics
    files = [{"path": f"m{i:03d}.py", "content": f"X{i} = {i}\n",
              "depends_on": [f"m{i - 20:03d}.py"] if i >= 20 else [],
              "simulate": {"duration_s": 0.05}} for i in range(200)]
    log = tmp_path / "run.log"
    killed: list[int] = []
    with running_pipeline(settings, workers=2, log=log):
        plan_id = submit(settings, {"project": "rs", "name": "restart", "files": files})
        for k in range(KILLS):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = {v["task_id"] for _, et, v in plan_events(settings, plan_id)
                        if et == "TaskCompleted"}
                pid = processor_pid(log)
                if len(done) >= (k + 1) * 40 and pid and pid not in killed:
                    break
                time.sleep(0.2)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        _, summary = wait_for(settings, plan_id, {"PlanCompleted"}, timeout=180)
        evs = plan_events(settings, plan_id)
        deadline = time.monotonic() + 30  # the file sink is a stage of its own
        while time.monotonic() < deadline and len(list(
                (settings.workspace / "rs").glob("*.py"))) < len(files):
            time.sleep(0.2)
    assert len(killed) == KILLS and "promoted its warm spare" in log.read_text()
    completions = Counter(v["event_id"] for _, et, v in evs
                          if et == "TaskCompleted" and not v["cached"])
    by_task = Counter(v["task_id"] for _, et, v in evs if et == "TaskCompleted")
    assert set(by_task) == {f["path"] for f in files}  # nothing lost
    assert max(by_task.values()) == 1 and len(completions) == len(files)  # none run twice
    assert summary["files"] == 200 and summary["executor_runs"] == 200
    state = asyncio.run(replay(settings, plan_id))[plan_id]
    assert state.header["status"] == F.PLAN_DONE
    for _, et, v in evs:
        if et == "TaskCompleted":
            data = (settings.workspace / "rs" / v["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == v["content_hash"], v["path"]
