"""The `command` executor: run a configured argv (never a shell) in the task's sandbox.

Contract with the command:

* argv is a list; items may hold the placeholders `{path}` (task path, relative to the
  sandbox), `{output}` (the same, absolute), `{task_file}` and `{sandbox}`. Each is replaced
  inside its own argument only — there is no shell, so metacharacters in values are inert.
* the task is JSON (see `task_payload`) on stdin and in `.devline/task.json` (also named by
  `DEVLINE_TASK_FILE`); cwd and HOME are the sandbox, TMPDIR is `.devline/tmp` inside it.
* the environment holds only PATH, LANG, LC_ALL, LC_CTYPE, TZ, the configured `env_allow`
  names (values taken from the worker's environment), the configured `env` constants, and
  the `DEVLINE_*` task variables. Nothing else of the worker's environment leaks in.
* the file the command leaves at the task path is the result (see `sandbox.read_output`).

Classification of failures (`ExecutorError.retryable`):

* timeout (whole process group killed: SIGTERM, grace, SIGKILL) → retryable, `timeout`
* killed by a signal → retryable, `signal`
* exit code in `retryable_exit_codes` (default {75} = EX_TEMPFAIL) → retryable, `tempfail`
* any other non-zero exit → not retryable, `exit_status` (the task or config is wrong)
* exit 0 but no / unsafe / oversized / non-UTF-8 result → not retryable (the command broke
  its contract; it should exit 75 when it wants another attempt)
* argv[0] not found or not executable → not retryable, `command_not_found`

After the command exits, anything it left running in its process group is SIGKILLed.
A process that starts its own session escapes that; isolate with a container if it matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.executors.fingerprint import config_fingerprint
from agents.executors.sandbox import (
    DEFAULT_MAX_OUTPUT_BYTES,
    RESERVED_DIR,
    read_output,
    resolve_inside,
)
from agents.types import ExecutionResult, WorkItem
from devline.errors import ConfigError, ExecutorError, WorkspaceError

VERSION = 1
TASK_FORMAT = 1
BASE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
EX_TEMPFAIL = 75
_SYSEXITS = {64: "EX_USAGE", 65: "EX_DATAERR", 66: "EX_NOINPUT", 67: "EX_NOUSER",
             68: "EX_NOHOST", 69: "EX_UNAVAILABLE", 70: "EX_SOFTWARE", 71: "EX_OSERR",
             72: "EX_OSFILE", 73: "EX_CANTCREAT", 74: "EX_IOERR", 75: "EX_TEMPFAIL",
             76: "EX_PROTOCOL", 77: "EX_NOPERM", 78: "EX_CONFIG"}
_PLACEHOLDER = re.compile(r"\{(path|output|task_file|sandbox)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PIPE_DRAIN_S = 2.0


@dataclass(frozen=True)
class CommandConfig:
    """How to run the command. See the module docstring for the contract."""

    argv: tuple[str, ...]
    timeout_s: float = 600.0
    grace_s: float = 5.0
    env_allow: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    retryable_exit_codes: frozenset[int] = frozenset({EX_TEMPFAIL})
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    log_tail_bytes: int = 8192
    version: str = ""

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) for a in self.argv) or not self.argv[0]:
            raise ConfigError("command: argv must be a non-empty list of strings")
        if any("\0" in a for a in self.argv):
            raise ConfigError("command: argv items may not contain NUL")
        if self.timeout_s <= 0 or self.grace_s < 0:
            raise ConfigError("command: timeout_s must be > 0 and grace_s >= 0")
        if self.max_output_bytes <= 0 or self.log_tail_bytes < 0:
            raise ConfigError("command: max_output_bytes must be > 0, log_tail_bytes >= 0")
        for name in (*self.env_allow, *self.env):
            if not _ENV_NAME.fullmatch(name):
                raise ConfigError(f"command: {name!r} is not a valid environment variable name")
        if any(not 1 <= code <= 255 for code in self.retryable_exit_codes):
            raise ConfigError("command: retryable_exit_codes must be in 1..255")


def task_payload(item: WorkItem, sandbox: Path, output: Path) -> dict[str, Any]:
    """The task as the command sees it (stdin and the task file). Format version 1."""
    return {
        "format": TASK_FORMAT,
        "plan_id": item.plan_id,
        "task_id": item.task_id,
        "path": item.path,
        "output": str(output),
        "sandbox": str(sandbox),
        "description": item.description,
        "language": item.language,
        "content": item.content,
        "attempt": item.attempt,
        "kind": item.kind,
        "options": dict(item.options),
        "context": [
            {"path": dep.path, "content_hash": dep.content_hash,
             "content": dep.content, "interface": dep.interface}
            for dep in item.context
        ],
        # kind "fix": the version to repair and the evidence of the check it failed.
        "fix": None if item.fix is None else {
            "content": item.fix.content, "check": item.fix.check,
            "command": item.fix.command, "summary": item.fix.summary,
            "output": item.fix.output, "lines": [list(r) for r in item.fix.lines],
            "fix_attempt": item.fix.fix_attempt, "reverted": item.fix.reverted,
            "history": list(item.fix.history)},
    }


def substitute(argv: tuple[str, ...], values: Mapping[str, str]) -> list[str]:
    """Replace `{path}`, `{output}`, `{task_file}`, `{sandbox}` inside each argument.

    One pass per argument, so a value that itself contains `{sandbox}` stays as it is; other
    braces are left alone (this is not `str.format`).
    """
    return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in argv]


class CommandExecutor:
    """Runs `config.argv` once per task, inside the task's sandbox."""

    name = "command"

    def __init__(self, config: CommandConfig, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        # None: read the worker's environment when a task runs (allow-listed names only).
        self._environ = environ

    def identity(self) -> str:
        """Name, version and a hash of what can change the produced file.

        Timeouts and size limits are left out: they decide whether a run succeeds, not what a
        successful run produces. Values of `env_allow` names (often secrets) are left out too.
        """
        c = self.config
        digest = config_fingerprint({"argv": list(c.argv), "env": dict(c.env),
                                     "env_allow": sorted(c.env_allow), "version": c.version})
        return f"{self.name}/{VERSION}:{digest}"

    async def run(self, item: WorkItem, sandbox: Path) -> ExecutionResult:
        sandbox, output, task_file, payload = _prepare(item, sandbox)
        argv = substitute(self.config.argv, {"path": item.path, "output": str(output),
                                             "task_file": str(task_file),
                                             "sandbox": str(sandbox)})
        env = self._child_env(item, sandbox, output, task_file)
        transport, child = await self._spawn(argv, env, sandbox)
        started = time.monotonic()
        timed_out = await self._supervise(transport, child, payload)
        elapsed = time.monotonic() - started
        log = child.log()
        rc = transport.get_returncode()
        if timed_out:
            raise ExecutorError(f"command timed out after {self.config.timeout_s:g}s",
                                retryable=True, error_type="timeout", output=log)
        if rc is not None and rc < 0:
            raise ExecutorError(f"command killed by {_signal_name(-rc)}", retryable=True,
                                error_type="signal", output=log)
        if rc in self.config.retryable_exit_codes:
            raise ExecutorError(f"command exited with status {rc}{_sysexit(rc)} (temporary)",
                                retryable=True, error_type="tempfail", output=log)
        if rc != 0:
            raise ExecutorError(f"command exited with status {rc}{_sysexit(rc)}",
                                retryable=False, error_type="exit_status", output=log)
        try:
            content = read_output(sandbox, item.path, self.config.max_output_bytes)
        except ExecutorError as exc:
            exc.output = log
            raise
        return ExecutionResult(content=content, log=f"{elapsed:.2f}s\n{log}" if log else None)

    def _child_env(self, item: WorkItem, sandbox: Path, output: Path,
                   task_file: Path) -> dict[str, str]:
        source = os.environ if self._environ is None else self._environ
        env = {name: source[name] for name in (*BASE_ENV, *self.config.env_allow)
               if name in source}
        env.setdefault("PATH", os.defpath)
        env.update(self.config.env)
        env.update({
            "HOME": str(sandbox),
            "TMPDIR": str(sandbox / RESERVED_DIR / "tmp"),
            "DEVLINE_SANDBOX": str(sandbox),
            "DEVLINE_TASK_FILE": str(task_file),
            "DEVLINE_TASK_PATH": item.path,
            "DEVLINE_OUTPUT": str(output),
            "DEVLINE_PLAN_ID": item.plan_id,
            "DEVLINE_TASK_ID": item.task_id,
            "DEVLINE_ATTEMPT": str(item.attempt),
            "DEVLINE_KIND": item.kind,
            "DEVLINE_LANGUAGE": item.language or "",
        })
        return env

    async def _spawn(self, argv: list[str], env: dict[str, str],
                     cwd: Path) -> tuple[asyncio.SubprocessTransport, _Child]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.subprocess_exec(
                lambda: _Child(self.config.log_tail_bytes), *argv,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=cwd, env=env,
                start_new_session=True,  # own process group: a timeout kills all of it
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise ExecutorError(f"cannot start {argv[0]!r}: {exc.strerror}", retryable=False,
                                error_type="command_not_found") from exc
        except ValueError as exc:  # NUL in a task value that went into env or argv
            raise ExecutorError(f"cannot start command: {exc}", retryable=False,
                                error_type="invalid_task") from exc
        except OSError as exc:  # EAGAIN, ENOMEM, EMFILE: the machine is busy, not the task
            raise ExecutorError(f"cannot start {argv[0]!r}: {exc}", retryable=True,
                                error_type="spawn_failed") from exc

    async def _supervise(self, transport: asyncio.SubprocessTransport, child: _Child,
                         payload: bytes) -> bool:
        """Wait for the command within the timeout (True if it ran out); always leave its
        process group dead and its pipes closed."""
        pgid = transport.get_pid()
        stdin = transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.write(payload)  # type: ignore[attr-defined]
            stdin.close()  # flushes, then EOF; a command that never reads stdin is fine
        timed_out = False
        try:
            try:
                await asyncio.wait_for(child.exited.wait(), self.config.timeout_s)
            except TimeoutError:
                timed_out = True
                _signal_group(pgid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(child.exited.wait(), self.config.grace_s)
        finally:
            # Also on cancellation (worker shutting down) and after a normal exit, for what
            # the command left running: nothing of its process group outlives the task.
            _signal_group(pgid, signal.SIGKILL)
            try:
                await asyncio.shield(asyncio.wait_for(child.finished.wait(), _PIPE_DRAIN_S))
            except TimeoutError:
                pass  # a process that left the group still holds a pipe: stop reading it
            finally:
                transport.close()
        return timed_out


class _Child(asyncio.SubprocessProtocol):
    """Keeps the tails of stdout and stderr, and tells when the process has exited.

    Not `Process.wait()`: it also waits for the pipes to close, which a grandchild holding
    stdout can put off forever.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.tails = {1: bytearray(), 2: bytearray()}
        self.exited = asyncio.Event()
        self.finished = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buf = self.tails[fd]
        buf += data
        if len(buf) > self.limit:
            del buf[: len(buf) - self.limit]

    def process_exited(self) -> None:
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.exited.set()
        self.finished.set()

    def log(self) -> str:
        """The stderr tail, or the stdout tail when stderr is empty."""
        data = bytes(self.tails[2] or self.tails[1])
        return data.decode("utf-8", errors="replace").strip()


def _prepare(item: WorkItem, sandbox: Path) -> tuple[Path, Path, Path, bytes]:
    """Check the task path and write the task file: (sandbox, output, task file, task JSON)."""
    sandbox = sandbox.resolve()
    try:
        output = resolve_inside(sandbox, item.path)
    except WorkspaceError as exc:
        raise ExecutorError(str(exc), retryable=False, error_type="invalid_path") from exc
    internal = sandbox / RESERVED_DIR
    (internal / "tmp").mkdir(parents=True, exist_ok=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    task_file = internal / "task.json"
    payload = json.dumps(task_payload(item, sandbox, output), ensure_ascii=False).encode()
    task_file.write_bytes(payload)
    return sandbox, output, task_file, payload


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _sysexit(code: int | None) -> str:
    return f" ({_SYSEXITS[code]})" if code in _SYSEXITS else ""
