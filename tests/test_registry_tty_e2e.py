"""`devline submit --wait` on a terminal with a schema registry configured, as a person
would run it (the scripted-tmux check): a live progress bar, the summary, and no log line
drawn into the bar. The pipeline and the submitter both speak the registry's wire format
to a registry served over a real socket."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import yaml
from fake_registry import serving

from devline.settings import Settings
from devline.supervisor import child_env
from tests.harness import ROOT, running_pipeline

LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d|\b(INFO|WARNING|ERROR|DEBUG)\b")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_a_terminal(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal as its stdin, stdout and stderr; its exit code
    and everything it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT,
                            close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_submit_wait_draws_a_progress_bar_and_no_log_lines(topics: Settings,
                                                           tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "project": "tty", "name": "tty", "options": {"executor": "demo", "qa": "syntax"},
        "files": [{"path": f"m{i}.py", "content": f"X = {i}\n",
                   "simulate": {"duration_s": 0.4}} for i in range(6)]}))
    with serving() as (url, registry):
        settings = topics.model_copy(update={"registry_url": url})
        with running_pipeline(settings, workers=2, test_workers=0):
            env = {**child_env(settings), "TERM": "xterm-256color", "COLUMNS": "100",
                   "LINES": "30"}
            code, drawn = on_a_terminal(
                [sys.executable, "-m", "devline", "submit", str(plan), "--wait"], env, 120)
    assert code == 0, drawn
    text = ANSI.sub("", drawn).replace("\r", "\n")
    frames = [line for line in text.splitlines() if "━" in line]
    assert len(frames) >= 2, drawn  # the bar was drawn, and redrawn as files finished
    assert any("6/6" in f for f in frames), frames[-3:]
    assert "done" in text
    logged = [line for line in text.splitlines() if LOG_LINE.search(line)]
    assert logged == [], logged
    # Everything went through the registry: schemas registered, then read back by id.
    assert any(m == "POST" and "/subjects/dev.devline.PlanSubmitted/versions" in p
               for m, p in registry.requests), registry.requests[:5]
    assert any(m == "GET" and p.startswith("/schemas/ids/") for m, p in registry.requests)
