"""Plain types shared by the role logic and the stream edges, so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class DepContext:
    """What a task knows about one finished dependency: its output or its public interface."""

    path: str
    content_hash: str
    content: str | None = None
    interface: str | None = None


@dataclass(frozen=True)
class FixContext:
    """What a fix task repairs: the version that failed its checks and the evidence."""

    content: str                 # the version to fix (the last one, or the one before a
    base_hash: str               # regression that was reverted)
    check: str                   # the failing check (ruff, pytest, ...)
    command: str                 # the command that failed, shell-quoted for reading
    summary: str                 # one line: the first blocking finding
    output: str                  # head and tail of the check's output (<= 8 KB)
    lines: tuple[tuple[int, int], ...] = ()
    fix_attempt: int = 1
    reverted: bool = False
    history: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkItem:
    """One unit of work handed to an executor."""

    plan_id: str
    task_id: str
    path: str
    description: str = ""
    language: str | None = None
    content: str | None = None
    executor: str = "demo"
    attempt: int = 1
    kind: str = "dev"
    priority: float = 0.0
    cache_key: str = ""
    dispatch_id: str = ""
    simulate: dict[str, Any] = field(default_factory=dict)
    context: tuple[DepContext, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    project: str | None = None
    fix: FixContext | None = None  # kind fix: the version to repair and why


@dataclass(frozen=True)
class ExecutionResult:
    """The file an executor produced, and what it cost."""

    content: str
    tokens: int | None = None
    cost: float | None = None
    log: str | None = None


class Executor(Protocol):
    """Turns a work item into file content. Raises `ExecutorError` on failure."""

    name: str

    def identity(self) -> str:
        """A stable string naming this executor and its configuration (part of cache keys)."""
        ...

    async def run(self, item: WorkItem, sandbox: Path) -> ExecutionResult:
        """Produce the file for `item`, working inside `sandbox` (a fresh directory)."""
        ...
