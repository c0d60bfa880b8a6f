"""What every checker gets and gives back, and which language a path belongs to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Protocol

from agents.qa.model import CheckStatus, Finding
from agents.qa.tools import ToolLocator, minimal_env, run_tool


class Language(StrEnum):
    PYTHON = "python"
    JAVASCRIPT = "javascript"
    TYPESCRIPT = "typescript"


_SUFFIXES = {".py": Language.PYTHON,
             ".js": Language.JAVASCRIPT, ".mjs": Language.JAVASCRIPT,
             ".cjs": Language.JAVASCRIPT,
             ".ts": Language.TYPESCRIPT, ".tsx": Language.TYPESCRIPT,
             ".mts": Language.TYPESCRIPT, ".cts": Language.TYPESCRIPT}


def language_of(path: str) -> Language | None:
    """The chain language of `path`, or None when no chain checks files like it."""
    return _SUFFIXES.get(PurePosixPath(path).suffix.lower())


@dataclass(frozen=True)
class CheckerOptions:
    """Operator settings of one checker; None/() mean the checker's own default."""

    timeout_s: float | None = None
    fatal: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckContext:
    """One check of one version of the file, in a sandbox holding the plan's files."""

    work: Path  # sandbox root: cwd and HOME of every tool
    scratch: Path  # outside `work`: reports and config files the tools write or read
    path: str  # workspace-relative POSIX path of the file under check
    source: str
    options: CheckerOptions
    timeout_s: float
    tools: ToolLocator


@dataclass(frozen=True)
class Outcome:
    """What a checker saw; the chain decides from it (and the previous version) what blocks."""

    status: CheckStatus
    command: tuple[str, ...] = ()
    output: str = ""
    findings: tuple[Finding, ...] = ()
    reason: str = ""


class Checker(Protocol):
    name: str
    languages: frozenset[Language]
    # A failed gate makes the rest of the chain meaningless (the file does not even parse).
    gate: bool

    def applies(self, path: str) -> bool: ...

    async def run(self, ctx: CheckContext) -> Outcome: ...


def scrub(text: str, ctx: CheckContext) -> str:
    """Tool output with the sandbox paths removed: stable across runs, readable by a fixer."""
    return text.replace(f"{ctx.work}/", "").replace(f"{ctx.scratch}/", "")


@dataclass(frozen=True)
class ToolOutcome:
    """A finished tool run whose output the checker parses."""

    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    output: str


async def run_in_sandbox(ctx: CheckContext, tool: str, args: Sequence[str], *,
                         python_path: bool = False,
                         extra_env: Mapping[str, str] | None = None) -> ToolOutcome | Outcome:
    """Run `tool args` for `ctx`; a missing tool or a timeout is returned as the `Outcome`."""
    exe = ctx.tools.find(tool)
    if exe is None:
        return Outcome(CheckStatus.SKIPPED, reason=f"{tool} not found (searched "
                       f"{len(ctx.tools.dirs)} directories: tool_paths, venv, PATH)")
    argv = (str(exe), *args)
    tmp = ctx.scratch / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**minimal_env(ctx.work, tmp, exe, python_path=python_path), **(extra_env or {})}
    timeout = ctx.options.timeout_s or ctx.timeout_s
    try:
        run = await run_tool(argv, cwd=ctx.work, env=env, timeout_s=timeout)
    except OSError as exc:  # found but not runnable: a bad shebang, no exec permission
        return Outcome(CheckStatus.ERROR, argv, reason=f"cannot run {tool}: {exc}")
    output = scrub(run.output, ctx)
    if run.timed_out or run.returncode is None:
        return Outcome(CheckStatus.ERROR, argv, output,
                       reason=f"timed out after {timeout:g}s (process group killed)")
    return ToolOutcome(argv, run.returncode, scrub(run.stdout, ctx), scrub(run.stderr, ctx),
                       output)
