"""Run one shard of tests in a pytest subprocess and read its results from JUnit.

The command is an argv list (no shell): `python -m pytest -q -p no:cacheprovider
--junitxml=<tmp> ...` with cwd and --rootdir at the plan's root, so node ids are relative
to it. pytest is given the shard's test files and a small plugin (`select_plugin`) keeps
exactly the shard's tests, so a module that fails to import costs its own tests only.
The environment is minimal: PATH, HOME and LANG from ours, PYTHONPATH=root (plus the
plugin's directory), PYTHONDONTWRITEBYTECODE=1 and the caller's `env`; nothing else of
ours (no credentials) reaches the tests.

On timeout the process group gets SIGINT — pytest then stops and still writes its report —
and SIGKILL after a grace period. Every requested test the report does not mention comes
back as an "error" saying why (timeout, its module's collection error, not reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from agents.executors.sandbox import check_relative
from agents.integration.junit import MAX_OUTPUT_BYTES, JunitError, TestOutcome, clip, parse_junit
from agents.integration.select_plugin import ENV_VAR, selectors

#: Seconds pytest gets after SIGINT to write its report before the group is SIGKILLed.
INTERRUPT_GRACE_S = 5.0
#: Seconds to drain the output pipe once the process is gone.
_DRAIN_S = 5.0
_PLUGIN = "devline_shard_select"
_INHERITED_ENV = ("PATH", "HOME", "LANG")


@dataclass(frozen=True)
class ShardRun:
    """What running one shard gave: an outcome per test, the wall time, how pytest ended."""

    outcomes: tuple[TestOutcome, ...]
    duration_s: float
    exit_code: int
    command: tuple[str, ...]


async def run_shard(root: Path, tests: Sequence[str], *, timeout_s: float = 600,
                    python: str = sys.executable,
                    env: Mapping[str, str] | None = None) -> ShardRun:
    """Run `tests` (pytest node ids relative to `root`) in one pytest process."""
    wanted = list(dict.fromkeys(tests))
    if not wanted:  # pytest without arguments would run everything under root
        return ShardRun(outcomes=(), duration_s=0.0, exit_code=0, command=())
    files = [f for f in dict.fromkeys(test_file(t) for t in wanted) if (root / f).is_file()]
    absent = [t for t in wanted if test_file(t) not in files]
    wanted = [t for t in wanted if test_file(t) in files]
    with tempfile.TemporaryDirectory(prefix="devline-shard-") as tmp:
        workdir = Path(tmp)
        junit = workdir / "junit.xml"
        listing = workdir / "tests.txt"
        listing.write_text("\n".join(wanted) + "\n", encoding="utf-8")
        shutil.copyfile(Path(__file__).with_name("select_plugin.py"), workdir / f"{_PLUGIN}.py")
        command = pytest_command(python, root, junit, files)
        child_env = shard_env(os.environ, root, workdir, env)
        child_env[ENV_VAR] = str(listing)
        started = time.monotonic()
        if files:  # a missing file would make pytest stop before running anything
            exit_code, timed_out, log = await _run(command, root, child_env, timeout_s)
        else:
            exit_code, timed_out, log = 4, False, "none of the shard's test files exists"
        duration = time.monotonic() - started
        reported: list[TestOutcome] = []
        if junit.is_file() and junit.stat().st_size:
            try:
                reported = parse_junit(junit.read_bytes(), root)
            except JunitError as exc:
                log = f"{log}\n{exc}"
    outcomes = settle(wanted, reported, exit_code=exit_code,
                      timeout_s=timeout_s if timed_out else None, log=log)
    outcomes += [_missing(t, f"test file not found: {test_file(t)}", "") for t in absent]
    return ShardRun(outcomes=tuple(outcomes), duration_s=duration, exit_code=exit_code,
                    command=command if files else ())


def test_file(test_id: str) -> str:
    """The file part of a node id, checked to stay inside the root."""
    path = test_id.split("::", 1)[0]
    check_relative(path)
    return path


def pytest_command(python: str, root: Path, junit: Path, files: Iterable[str]) -> tuple[str, ...]:
    """The argv that runs pytest on `files` with the shard plugin and a JUnit report."""
    return (python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", _PLUGIN,
            f"--junitxml={junit}", f"--rootdir={root}", "--continue-on-collection-errors",
            # xunit1 names each case's file; passing tests' output is not worth keeping.
            "-o", "junit_family=xunit1", "-o", "junit_logging=all",
            "-o", "junit_log_passing_tests=false", "--", *files)


def shard_env(parent: Mapping[str, str], root: Path, plugin_dir: Path,
              extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's whole environment: a few of `parent`'s variables, ours, then `extra`."""
    env = {name: parent[name] for name in _INHERITED_ENV if name in parent}
    env["PYTHONPATH"] = os.pathsep.join((str(root), str(plugin_dir)))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def settle(wanted: Sequence[str], reported: Sequence[TestOutcome], *, exit_code: int,
           timeout_s: float | None, log: str) -> list[TestOutcome]:
    """The reported outcomes, plus an outcome for each wanted test the report left out.

    A module-level report (a collection error or module skip) stands for each wanted test
    of that module; otherwise a missing test is an "error": timed out, or not reported.
    """
    wanted_set = set(wanted)
    modules = {o.test_id: o for o in reported if "::" not in o.test_id}
    outcomes = [o for o in reported if "::" in o.test_id or o.test_id in wanted_set]
    seen = set().union(*(selectors(o.test_id) for o in outcomes))
    for test in wanted:
        if test in seen:
            continue
        module = modules.get(test_file(test))
        if module is not None:
            outcomes.append(replace(module, test_id=test, duration_s=0.0))
        elif timeout_s is not None:
            outcomes.append(_missing(test, f"timeout: shard killed after {timeout_s:g} s", log))
        else:
            outcomes.append(_missing(test, f"not reported by pytest (exit code {exit_code})", log))
    return outcomes


def _missing(test: str, reason: str, log: str) -> TestOutcome:
    return TestOutcome(test_id=test, status="error", duration_s=0.0, message=reason,
                       output=clip(log), traceback="")


async def _run(command: Sequence[str], cwd: Path, env: Mapping[str, str],
               timeout_s: float) -> tuple[int, bool, str]:
    """Run `command`; return its exit code, whether it timed out, and its output (clipped)."""
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group: a timeout reaches every child
    )
    assert proc.stdout is not None
    reader = asyncio.ensure_future(_collect(proc.stdout, MAX_OUTPUT_BYTES))
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        timed_out = True
        _signal_group(proc.pid, signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), INTERRUPT_GRACE_S)
        except TimeoutError:
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    finally:
        _signal_group(proc.pid, signal.SIGKILL)  # whatever the tests left running
    try:
        log = await asyncio.wait_for(reader, _DRAIN_S)
    except TimeoutError:
        log = "(output not drained)"
    code = proc.returncode
    return (code if code is not None else -1), timed_out, log


async def _collect(stream: asyncio.StreamReader, limit: int) -> str:
    """Read `stream` to its end, keeping about `limit` bytes of head and tail."""
    head, tail, half = bytearray(), bytearray(), limit // 2
    dropped = 0
    while chunk := await stream.read(64 * 1024):
        room = half - len(head)
        if room > 0:
            head += chunk[:room]
            chunk = chunk[room:]
        tail += chunk
        if len(tail) > half:
            dropped += len(tail) - half
            del tail[: len(tail) - half]
    middle = f"\n[... {dropped} bytes cut ...]\n".encode() if dropped else b""
    return clip(bytes(head + middle + tail).decode("utf-8", "replace"), limit)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
