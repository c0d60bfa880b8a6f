"""The CLI against a real run: `devline run` starts clean (no ERROR lines, no terminal
escapes, devline's own DEBUG lines with DEBUG), `tail` exits at the end of the topic and
filters, `status` shows a header and a rejected plan's reason at 80 columns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from devline.settings import Settings
from devline.supervisor import child_env
from tests.harness import running_pipeline

ROOT = Path(__file__).resolve().parents[1]
PLAN = """\
project: clean
name: clean start
options: {executor: demo, qa: syntax}
files:
  - path: clean/__init__.py
    content: "from clean.core import answer\\n"
  - path: clean/core.py
    content: "from clean.util import double\\n\\ndef answer():\\n    return double(21)\\n"
  - path: clean/util.py
    content: "def double(x):\\n    return 2 * x\\n"
"""
CYCLE = """\
project: loop
name: a cycle
files:
  - {path: a.py, depends_on: [b.py]}
  - {path: b.py, depends_on: [a.py]}
"""


def devline(settings: Settings, *args: str, columns: int | None = None
            ) -> subprocess.CompletedProcess[str]:
    env = child_env(settings)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "devline", *args], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_clean_start_tail_and_status(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"log_level": "DEBUG"})
    plan, cycle = tmp_path / "plan.yaml", tmp_path / "cycle.yaml"
    plan.write_text(PLAN)
    cycle.write_text(CYCLE)
    log = tmp_path / "run.log"
    with running_pipeline(settings, workers=1, test_workers=0, log=log):
        done = devline(settings, "submit", str(plan), "--wait", "--timeout", "90")
        assert done.returncode == 0, done.stderr
        plan_id = done.stdout.split()[0]
        rejected = devline(settings, "submit", str(cycle))
        assert rejected.returncode == 1 and "cycle" in rejected.stderr
        rejected_id = rejected.stdout.split()[0]

    # A clean start and stop: no ERROR lines, no cursor escapes, no unclosed clients;
    # devline's own DEBUG lines are there.
    text = log.read_text(errors="replace")
    assert [line for line in text.splitlines() if " ERROR " in line] == []
    assert "\x1b" not in text and "Unclosed" not in text and "Traceback" not in text
    assert "DEBUG devline.sink: wrote" in text and "DEBUG devline.planner: plan" in text

    # tail: exits at the end of the topic, with or without --count.
    every = devline(settings, "tail", "devline.events")
    assert every.returncode == 0, every.stderr
    events = [json.loads(line) for line in every.stdout.splitlines()]
    ours = [e for e in events if e["key"] == plan_id]
    assert {e["type"] for e in ours} >= {"PlanAccepted", "TaskCompleted", "PlanCompleted"}
    two = devline(settings, "tail", "devline.events", "--count", "2", "--key", plan_id)
    assert [json.loads(line)["offset"] for line in two.stdout.splitlines()] == [
        e["offset"] for e in ours[:2]]
    done_lines = devline(settings, "tail", "devline.events", "-t", "TaskCompleted",
                         "--format", "pretty", "-k", plan_id).stdout.splitlines()
    assert len(done_lines) == 3 and all("TaskCompleted" in line for line in done_lines)
    partition = ours[0]["partition"]
    last = devline(settings, "tail", "devline.events", "-p", str(partition), "-o", "-1")
    assert [json.loads(line)["offset"] for line in last.stdout.splitlines()] == [
        max(e["offset"] for e in events if e["partition"] == partition)]
    first_ts = min(e["timestamp"] for e in ours)
    until = devline(settings, "tail", "devline.events", "-k", plan_id, "--until",
                    str(first_ts)).stdout.splitlines()
    assert [json.loads(line)["type"] for line in until] == ["PlanAccepted"]
    recent = devline(settings, "tail", "devline.events", "--since", "10m", "-k", plan_id)
    assert len(recent.stdout.splitlines()) == len(ours)
    follow = devline(settings, "tail", "devline.events", "-f", "--from-beginning", "-n", "1")
    assert follow.returncode == 0 and len(follow.stdout.splitlines()) == 1

    # status: a header, both plans, ids whole on one line, the rejection's reason.
    status = devline(settings, "status", columns=80)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split()[:3] == ["PLAN", "STATUS", "FILES"]
    assert max(len(line) for line in lines) <= 80
    row = next(i for i, line in enumerate(lines) if line.startswith(rejected_id))
    assert lines[row].split()[1] == "rejected"
    assert lines[row + 1].strip().startswith("rejected: dependency cycle")
    assert any(line.startswith(plan_id) and line.split()[1] == "done" for line in lines)
