"""Find QA tools and run them: argv only (no shell), a minimal environment, a time limit.

A tool run is an ordinary process of the worker's user in its own process group; on a
timeout the whole group is killed, and afterwards anything it left running there is killed
too. The environment is built from scratch, so no secret of the worker reaches the tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where scripts/bootstrap installs TypeScript (npm --prefix), so tsc needs no global install.
NODE_BIN = REPO_ROOT / ".cache" / "node" / "node_modules" / ".bin"
STREAM_LIMIT = 4 * 1024 * 1024
_DRAIN_S = 2.0


@dataclass(frozen=True)
class ToolLocator:
    """Directories searched for a tool, first match wins."""

    dirs: tuple[Path, ...]

    @classmethod
    def default(cls, tool_paths: Sequence[Path] = (), *, path_env: str | None = None,
                include_venv: bool = True) -> ToolLocator:
        """`tool_paths`, then the running interpreter's bin (the venv), then the bootstrap
        node cache, then PATH (`path_env`, default the process's)."""
        dirs = [Path(p) for p in tool_paths]
        if include_venv:
            dirs += [Path(sys.executable).parent, NODE_BIN]
        path = os.environ.get("PATH", "") if path_env is None else path_env
        dirs += [Path(p) for p in path.split(os.pathsep) if p]
        return cls(tuple(dict.fromkeys(dirs)))

    def find(self, name: str) -> Path | None:
        for directory in self.dirs:
            candidate = directory / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        return None


def minimal_env(work: Path, tmp: Path, tool: Path, *, python_path: bool = False) -> dict[str, str]:
    """A fresh environment: nothing of the worker's is copied except PATH."""
    path = os.pathsep.join(dict.fromkeys([str(tool.parent),
                                          *os.environ.get("PATH", os.defpath).split(os.pathsep)]))
    env = {"PATH": path, "HOME": str(work), "LANG": "C.UTF-8", "TMPDIR": str(tmp),
           "PYTHONDONTWRITEBYTECODE": "1"}
    if python_path:
        env["PYTHONPATH"] = str(work)
    return env


@dataclass(frozen=True)
class ToolRun:
    returncode: int | None  # None when the run was killed for its time limit
    stdout: str
    stderr: str
    duration_ms: int
    timed_out: bool

    @property
    def output(self) -> str:
        return "\n".join(part for part in (self.stdout.strip(), self.stderr.strip()) if part)


class _Capture:
    """Keeps up to `limit` bytes of a stream: its head and its tail, and the total seen."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > self.limit // 2:
            del self.tail[: len(self.tail) - self.limit // 2]

    def text(self) -> str:
        elided = self.total - len(self.head) - len(self.tail)
        middle = f"\n... {elided} bytes elided ...\n".encode() if elided else b""
        return bytes(self.head + middle + self.tail).decode("utf-8", errors="replace")


async def _pump(stream: asyncio.StreamReader | None, capture: _Capture) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        capture.add(chunk)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def run_tool(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
                   timeout_s: float, limit: int = STREAM_LIMIT) -> ToolRun:
    """Run `argv` in `cwd`; past `timeout_s` kill its whole process group."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)  # own group: one killpg reaches its children too
    out, err = _Capture(limit), _Capture(limit)
    pumps = asyncio.gather(_pump(proc.stdout, out), _pump(proc.stderr, err))
    timed_out = False
    try:
        async with asyncio.timeout(timeout_s):
            await proc.wait()
    except TimeoutError:
        timed_out = True
    finally:
        # After exit too: a grandchild left in the group could hold the pipes open forever.
        _kill_group(proc.pid)
        if proc.returncode is None:
            await proc.wait()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_DRAIN_S):
            await pumps
    if not pumps.done():
        pumps.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumps
    duration_ms = int((time.monotonic() - started) * 1000)
    return ToolRun(None if timed_out else proc.returncode, out.text(), err.text(),
                   duration_ms, timed_out)
