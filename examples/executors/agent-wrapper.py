#!/usr/bin/env python3
"""Plug a coding-agent CLI into devline's `command` executor.

devline runs this script in a fresh sandbox directory (cwd and HOME) with the task as JSON on
stdin and in $DEVLINE_TASK_FILE. The script:

1. reads the task (path, description, language, content, attempt, kind, context);
2. writes the finished dependencies it was given into the sandbox at their own paths, so the
   agent can open them like any project file;
3. runs the agent named by $DEVLINE_AGENT_CMD with a prompt, in the sandbox — a JSON list
   (`["claude", "-p", "{prompt}"]`) or a string split like a shell would split it, but never
   run by one. `{prompt}` and `{path}` are replaced inside arguments; without `{prompt}` the
   prompt is appended as the last argument;
4. without $DEVLINE_AGENT_CMD, writes the content the plan carries, or a stub.

The file left at the task path is the result. Exit codes tell devline what to do next:
0 done · 75 (EX_TEMPFAIL) try again: the agent failed, timed out or wrote nothing ·
65 (EX_DATAERR) the task JSON is unusable · 78 (EX_CONFIG) the agent cannot be started.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

EX_OK, EX_DATAERR, EX_TEMPFAIL, EX_CONFIG = 0, 65, 75, 78


def load_task() -> dict:
    task_file = os.environ.get("DEVLINE_TASK_FILE")
    text = Path(task_file).read_text(encoding="utf-8") if task_file else sys.stdin.read()
    task = json.loads(text)
    if not isinstance(task, dict) or not isinstance(task.get("path"), str):
        raise ValueError("task JSON has no 'path'")
    return task


def inside(root: Path, relpath: str) -> Path | None:
    """`relpath` under `root`, or None if it would leave it."""
    base = root.resolve()
    target = (base / relpath).resolve()
    try:
        target.relative_to(base)
    except ValueError:
        return None
    return None if target == base or Path(relpath).is_absolute() else target


def write_dependencies(task: dict, root: Path) -> None:
    for dep in task.get("context") or []:
        target = inside(root, dep.get("path") or "")
        if target is not None and dep.get("content") is not None and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(dep["content"], encoding="utf-8")


def prompt_for(task: dict) -> str:
    lines = [f"Write the file {task['path']}"
             + (f" ({task['language']})." if task.get("language") else ".")]
    if task.get("description"):
        lines += ["", task["description"]]
    if task.get("kind") == "fix":
        lines += ["", f"This is a fix (attempt {task.get('attempt')}): the current version "
                      "failed its checks."]
    deps = task.get("context") or []
    if deps:
        lines += ["", "It depends on these files (already in this directory when their content "
                      "is known); use their real names and signatures:"]
        for dep in deps:
            lines.append(f"- {dep['path']}")
            if dep.get("content") is None and dep.get("interface"):
                lines += ["  public interface:", *("    " + ln for ln in
                                                   dep["interface"].splitlines())]
    lines += ["", f"Write only {task['path']}; do not change other files."]
    return "\n".join(lines)


def agent_argv(spec: str, prompt: str, path: str) -> list[str]:
    argv = json.loads(spec) if spec.lstrip().startswith("[") else shlex.split(spec)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("DEVLINE_AGENT_CMD must be a non-empty command")
    if not any("{prompt}" in a for a in argv):
        argv.append("{prompt}")
    return [a.replace("{prompt}", prompt).replace("{path}", path) for a in argv]


def stub(task: dict) -> str:
    comment = "#" if task["path"].endswith((".py", ".sh", ".rb", ".toml", ".yaml", ".yml")) \
        else "//"
    lines = [f"{comment} {task['path']}: stub written by agent-wrapper (no agent configured)"]
    lines += [f"{comment} {line}" for line in (task.get("description") or "").splitlines()]
    return "\n".join(lines) + "\n"


def main() -> int:
    try:
        task = load_task()
    except (OSError, ValueError) as exc:
        print(f"agent-wrapper: cannot read the task: {exc}", file=sys.stderr)
        return EX_DATAERR
    root = Path(os.environ.get("DEVLINE_SANDBOX") or os.getcwd())
    output = inside(root, task["path"])
    if output is None:
        print(f"agent-wrapper: task path {task['path']!r} leaves the sandbox", file=sys.stderr)
        return EX_DATAERR
    output.parent.mkdir(parents=True, exist_ok=True)

    spec = os.environ.get("DEVLINE_AGENT_CMD", "").strip()
    if not spec:
        content = task.get("content")
        output.write_text(content if content is not None else stub(task), encoding="utf-8")
        return EX_OK

    write_dependencies(task, root)
    try:
        argv = agent_argv(spec, prompt_for(task), task["path"])
    except ValueError as exc:
        print(f"agent-wrapper: {exc}", file=sys.stderr)
        return EX_CONFIG
    timeout = float(os.environ.get("DEVLINE_AGENT_TIMEOUT_S") or 0) or None
    try:
        # stdin closed: an agent waiting for input would otherwise hang until the timeout.
        done = subprocess.run(argv, cwd=root, stdin=subprocess.DEVNULL, timeout=timeout,
                              check=False)
    except (FileNotFoundError, PermissionError) as exc:
        print(f"agent-wrapper: cannot start {argv[0]!r}: {exc}", file=sys.stderr)
        return EX_CONFIG
    except subprocess.TimeoutExpired:
        print(f"agent-wrapper: the agent ran longer than {timeout:g}s", file=sys.stderr)
        return EX_TEMPFAIL
    if done.returncode != 0:
        print(f"agent-wrapper: the agent exited with {done.returncode}", file=sys.stderr)
        return EX_TEMPFAIL
    if not output.is_file():
        print(f"agent-wrapper: the agent wrote no {task['path']}", file=sys.stderr)
        return EX_TEMPFAIL
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
