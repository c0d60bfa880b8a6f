"""The command executor against real child processes: no shell, sandbox, env, timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agents.executors.command import CommandConfig, CommandExecutor
from agents.executors.sandbox import new_sandbox
from agents.types import DepContext, ExecutionResult, WorkItem
from devline.errors import ConfigError, ExecutorError

PY = sys.executable


def script(tmp_path: Path, body: str, name: str = "child.py") -> str:
    path = tmp_path / name
    path.write_text("import json, os, sys, subprocess, time, signal\n" + textwrap.dedent(body))
    return str(path)


def item(path: str = "src/out.txt", **kw: object) -> WorkItem:
    return WorkItem(plan_id="plan-1", task_id="task-1", path=path, **kw)  # type: ignore[arg-type]


def run(executor: CommandExecutor, work: WorkItem, sandbox: Path) -> ExecutionResult:
    return asyncio.run(executor.run(work, sandbox))


def command(argv: list[str], **kw: object) -> CommandExecutor:
    return CommandExecutor(CommandConfig(argv=tuple(argv), **kw))  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_dead(pids: list[int], within_s: float = 3.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    return new_sandbox("task-1", base=tmp_path)


DUMP_ARGV = """
with open(os.environ["DEVLINE_OUTPUT"], "w") as fh:
    json.dump(sys.argv[1:], fh)
"""


def test_shell_metacharacters_arrive_verbatim_and_run_nothing(tmp_path: Path,
                                                              sandbox: Path) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    pwned = tmp_path / "pwned"
    nasty = [
        f"; rm -rf {canary} && $(touch {pwned}) | > x",
        f"`touch {pwned}`",
        f"$(touch {pwned})",
        "line one\nline two; touch pwned",
        "*", "?", "~", "$HOME", "${PATH}", "'\"", "&", "2>&1", "|", "x > y", "a\\b", "",
        "{notaplaceholder}", "{path",
    ]
    path = f"out/a;b $(touch {pwned.name}) `id` & x.txt"
    executor = command([PY, script(tmp_path, DUMP_ARGV), *nasty,
                        "{path}", "--sandbox={sandbox}", "{task_file}"])

    result = run(executor, item(path), sandbox)

    assert json.loads(result.content) == [
        *nasty, path, f"--sandbox={sandbox}", str(sandbox / ".devline" / "task.json")]
    assert canary.is_dir()
    for where in (tmp_path, sandbox, sandbox / "out", Path.cwd()):
        assert not (where / "pwned").exists()
        assert not (where / "x").exists()
        assert not (where / "y").exists()


def test_placeholder_values_are_not_substituted_twice(tmp_path: Path, sandbox: Path) -> None:
    path = "lit/{sandbox}.txt"
    executor = command([PY, script(tmp_path, DUMP_ARGV), "{path}"])
    result = run(executor, item(path), sandbox)
    assert json.loads(result.content) == [path]


def test_task_arrives_on_stdin_and_in_the_task_file(tmp_path: Path, sandbox: Path) -> None:
    child = script(tmp_path, """
        stdin = json.load(sys.stdin)
        with open(os.environ["DEVLINE_TASK_FILE"]) as fh:
            from_file = json.load(fh)
        assert stdin == from_file, "stdin and task file differ"
        env = {k: v for k, v in os.environ.items() if k.startswith("DEVLINE_")}
        with open(stdin["path"], "w") as fh:  # relative: cwd is the sandbox
            json.dump({"task": stdin, "env": env, "cwd": os.getcwd()}, fh)
    """)
    work = item("pkg/mod.py", description="make it", language="python", content="x = 1\n",
                attempt=2, kind="fix",
                context=(DepContext("pkg/base.py", "ab" * 32, content="def f(a): ..."),
                         DepContext("pkg/api.py", "cd" * 32, interface="class Api: ...")))

    out = json.loads(run(command([PY, child]), work, sandbox).content)

    task = out["task"]
    assert (task["path"], task["description"], task["language"], task["content"]) == (
        "pkg/mod.py", "make it", "python", "x = 1\n")
    assert (task["attempt"], task["kind"], task["plan_id"], task["task_id"]) == (
        2, "fix", "plan-1", "task-1")
    assert task["context"] == [
        {"path": "pkg/base.py", "content_hash": "ab" * 32, "content": "def f(a): ...",
         "interface": None},
        {"path": "pkg/api.py", "content_hash": "cd" * 32, "content": None,
         "interface": "class Api: ..."}]
    assert task["output"] == str(sandbox / "pkg" / "mod.py")
    assert out["cwd"] == str(sandbox)
    assert out["env"]["DEVLINE_TASK_PATH"] == "pkg/mod.py"
    assert out["env"]["DEVLINE_ATTEMPT"] == "2"
    assert out["env"]["DEVLINE_SANDBOX"] == str(sandbox)


def test_a_command_that_ignores_a_large_stdin_is_fine(tmp_path: Path, sandbox: Path) -> None:
    child = script(tmp_path, 'open(os.environ["DEVLINE_OUTPUT"], "w").write("ok")\n')
    work = item(content="x" * 2_000_000)  # far more than a pipe buffer
    assert run(command([PY, child], timeout_s=20), work, sandbox).content == "ok"


ENV_DUMP = """
with open(os.environ["DEVLINE_OUTPUT"], "w") as fh:
    json.dump(dict(os.environ), fh)
"""


def test_environment_is_an_allow_list(tmp_path: Path, sandbox: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    monkeypatch.setenv("DEVLINE_SASL_PASSWORD", "hunter2")  # a worker setting, not a task var
    monkeypatch.setenv("ALLOWED_VAR", "visible")
    executor = command([PY, script(tmp_path, ENV_DUMP)], env_allow=("ALLOWED_VAR",),
                       env={"AGENT_MODE": "fast"})

    env = json.loads(run(executor, item(), sandbox).content)

    assert "SECRET_TOKEN" not in env
    assert "DEVLINE_SASL_PASSWORD" not in env
    assert "s3cr3t" not in json.dumps(env)
    assert env["ALLOWED_VAR"] == "visible"
    assert env["AGENT_MODE"] == "fast"
    assert env["HOME"] == str(sandbox)
    assert Path(env["TMPDIR"]).parent.parent == sandbox
    allowed = {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "TMPDIR", "ALLOWED_VAR",
               "AGENT_MODE"}
    assert {k for k in env if not k.startswith("DEVLINE_")} <= allowed


def test_timeout_kills_the_whole_process_group(tmp_path: Path, sandbox: Path) -> None:
    child = script(tmp_path, """
        grandchild = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        with open("pids.json", "w") as fh:
            json.dump([os.getpid(), grandchild.pid], fh)
        print("working hard", file=sys.stderr, flush=True)
        time.sleep(60)
    """)
    executor = command([PY, child], timeout_s=1.0, grace_s=0.3)

    started = time.monotonic()
    with pytest.raises(ExecutorError) as caught:
        run(executor, item(), sandbox)

    assert time.monotonic() - started < 10
    assert caught.value.retryable and caught.value.error_type == "timeout"
    assert "working hard" in (caught.value.output or "")
    pids = json.loads((sandbox / "pids.json").read_text())
    assert wait_dead(pids) == []


def test_processes_left_behind_after_success_are_killed(tmp_path: Path, sandbox: Path) -> None:
    child = script(tmp_path, """
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open("pids.json", "w") as fh:
            json.dump([grandchild.pid], fh)
        with open(os.environ["DEVLINE_OUTPUT"], "w") as fh:
            fh.write("done")
    """)
    started = time.monotonic()
    result = run(command([PY, child], timeout_s=30), item(), sandbox)
    assert result.content == "done"
    assert time.monotonic() - started < 10  # did not wait for the grandchild's stdout pipe
    assert wait_dead(json.loads((sandbox / "pids.json").read_text())) == []


def test_cancelling_a_run_kills_the_process_group(tmp_path: Path, sandbox: Path) -> None:
    child = script(tmp_path, """
        with open("pids.json", "w") as fh:
            json.dump([os.getpid()], fh)
        time.sleep(60)
    """)

    async def cancel_soon() -> None:
        task = asyncio.create_task(command([PY, child]).run(item(), sandbox))
        while not (sandbox / "pids.json").exists():  # noqa: ASYNC110 - a file, not an event
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_soon())
    assert wait_dead(json.loads((sandbox / "pids.json").read_text())) == []


@pytest.mark.parametrize(("body", "retryable", "error_type"), [
    ("sys.exit(75)", True, "tempfail"),
    ("sys.exit(2)", False, "exit_status"),
    ("sys.exit(64)", False, "exit_status"),
    ("sys.exit(78)", False, "exit_status"),
    ("os.kill(os.getpid(), signal.SIGKILL)", True, "signal"),
    ("raise RuntimeError('boom')", False, "exit_status"),
    ("pass", False, "no_output"),
])
def test_exit_classification(tmp_path: Path, sandbox: Path, body: str, retryable: bool,
                             error_type: str) -> None:
    child = script(tmp_path, f"print('tail of stderr', file=sys.stderr, flush=True)\n{body}\n")
    with pytest.raises(ExecutorError) as caught:
        run(command([PY, child]), item(), sandbox)
    assert (caught.value.retryable, caught.value.error_type) == (retryable, error_type)
    assert "tail of stderr" in (caught.value.output or "")


def test_configured_retryable_exit_codes(tmp_path: Path, sandbox: Path) -> None:
    executor = command([PY, script(tmp_path, "sys.exit(int(sys.argv[1]))"), "3"],
                       retryable_exit_codes=frozenset({3}))
    with pytest.raises(ExecutorError) as caught:
        run(executor, item(), sandbox)
    assert caught.value.retryable


def test_stderr_tail_is_bounded(tmp_path: Path, sandbox: Path) -> None:
    child = script(tmp_path, "sys.stderr.write('x' * 500000 + 'END')\nsys.exit(1)\n")
    with pytest.raises(ExecutorError) as caught:
        run(command([PY, child], log_tail_bytes=100), item(), sandbox)
    output = caught.value.output or ""
    assert output.endswith("END") and len(output) <= 100


def test_symlink_to_a_file_outside_is_rejected(tmp_path: Path, sandbox: Path) -> None:
    child = script(tmp_path, 'os.symlink("/etc/passwd", os.environ["DEVLINE_OUTPUT"])\n')
    with pytest.raises(ExecutorError) as caught:
        run(command([PY, child]), item(), sandbox)
    assert not caught.value.retryable and caught.value.error_type == "unsafe_output"
    assert "root:" not in str(caught.value) + (caught.value.output or "")


def test_symlinked_directory_pointing_outside_is_rejected(tmp_path: Path,
                                                          sandbox: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    child = script(tmp_path, f"""
        os.rmdir("src")
        os.symlink({str(outside)!r}, "src")
        with open("src/out.txt", "w") as fh:
            fh.write("escaped")
    """)
    with pytest.raises(ExecutorError) as caught:
        run(command([PY, child]), item("src/out.txt"), sandbox)
    assert caught.value.error_type == "unsafe_output"


def test_a_fifo_at_the_task_path_is_rejected_without_hanging(tmp_path: Path,
                                                             sandbox: Path) -> None:
    child = script(tmp_path, 'os.mkfifo(os.environ["DEVLINE_OUTPUT"])\n')
    with pytest.raises(ExecutorError) as caught:
        run(command([PY, child]), item(), sandbox)
    assert caught.value.error_type == "unsafe_output"


def test_oversized_output_is_rejected(tmp_path: Path, sandbox: Path) -> None:
    child = script(tmp_path, 'open(os.environ["DEVLINE_OUTPUT"], "w").write("x" * 2000)\n')
    with pytest.raises(ExecutorError) as caught:
        run(command([PY, child], max_output_bytes=1000), item(), sandbox)
    assert caught.value.error_type == "output_too_large"


@pytest.mark.parametrize("path", [
    "../escape.txt", "/tmp/escape.txt", "a/../../escape.txt", ".devline/task.json",  # noqa: S108
])
def test_task_paths_that_leave_the_sandbox_never_start_the_command(
        tmp_path: Path, sandbox: Path, path: str) -> None:
    marker = tmp_path / "started"
    child = script(tmp_path, f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(ExecutorError) as caught:
        run(command([PY, child]), item(path), sandbox)
    assert not caught.value.retryable and caught.value.error_type == "invalid_path"
    assert not marker.exists()
    assert not (tmp_path / "escape.txt").exists()


def test_missing_program_is_not_retryable(sandbox: Path) -> None:
    with pytest.raises(ExecutorError) as caught:
        run(command(["/nonexistent/agent-cli", "{path}"]), item(), sandbox)
    assert not caught.value.retryable and caught.value.error_type == "command_not_found"


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        command([])
    with pytest.raises(ConfigError):
        command([PY], timeout_s=0)
    with pytest.raises(ConfigError):
        command([PY], env_allow=("BAD NAME",))


def test_identity_tracks_argv_and_env_but_not_timeouts() -> None:
    base = command([PY, "agent.py"])
    assert base.identity().startswith("command/1:")
    assert base.identity() == command([PY, "agent.py"], timeout_s=5).identity()
    assert base.identity() != command([PY, "other.py"]).identity()
    assert base.identity() != command([PY, "agent.py"], env={"MODE": "x"}).identity()
    assert base.identity() != command([PY, "agent.py"], version="2").identity()
