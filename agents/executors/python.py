"""The `python` executor: call an entry point `module:function` (or `module:Class.method`).

The function takes the `WorkItem`, or the `WorkItem` and the sandbox `Path`, and may be sync
or async. It returns the file content as `str`, an `ExecutionResult`, or `None` after writing
the file itself at `item.path` inside the sandbox. Sync functions run in a worker thread so
they do not stall the event loop; a timeout abandons such a thread, it cannot stop it.

Errors: an `ExecutorError` the function raises passes through unchanged (it knows best);
`ValueError` and `TypeError` mean the input cannot work → not retryable (`invalid_task`);
any other exception → retryable (`exception`), with the traceback tail as `output`.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.executors.fingerprint import config_fingerprint
from agents.executors.sandbox import DEFAULT_MAX_OUTPUT_BYTES, read_output, write_output
from agents.types import ExecutionResult, WorkItem
from devline.errors import ConfigError, ExecutorError, WorkspaceError

VERSION = 1
_TRACE_CHARS = 4000


@dataclass(frozen=True)
class PythonConfig:
    """Which function to call, and for how long at most."""

    entrypoint: str
    timeout_s: float | None = None
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    version: str = ""

    def __post_init__(self) -> None:
        module, sep, attr = self.entrypoint.partition(":")
        if not sep or not module.strip() or not attr.strip():
            raise ConfigError(f"python: entrypoint must look like 'module:function', "
                              f"got {self.entrypoint!r}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ConfigError("python: timeout_s must be > 0")


def load_entrypoint(spec: str) -> Callable[..., Any]:
    """Import `module:attr.path` and return the callable, or raise `ConfigError`."""
    module_name, _, qualname = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name.strip())
    except Exception as exc:  # ImportError, or the module's own code failing on import
        raise ConfigError(f"python: cannot import {module_name!r}: "
                          f"{type(exc).__name__}: {exc}") from exc
    for attr in qualname.strip().split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise ConfigError(f"python: {spec!r}: no attribute {attr!r}") from None
    if not callable(target):
        raise ConfigError(f"python: {spec!r} is not callable")
    return target


def _takes_sandbox(function: Callable[..., Any], spec: str) -> bool:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return True  # a builtin or C callable: assume the full (item, sandbox) form
    for args in ((None, None), (None,)):
        try:
            signature.bind(*args)
        except TypeError:
            continue
        return len(args) == 2
    raise ConfigError(f"python: {spec!r} must accept (item) or (item, sandbox)")


def _source_digest(function: Callable[..., Any]) -> str:
    """A hash of the entry point's module source, so editing it invalidates cached results."""
    module = sys.modules.get(getattr(function, "__module__", "") or "")
    try:
        source = inspect.getsourcefile(module) if module else None
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16] if source else ""
    except (OSError, TypeError):
        return ""


class PythonExecutor:
    """Calls a Python function per task."""

    name = "python"

    def __init__(self, config: PythonConfig,
                 function: Callable[..., Any] | None = None) -> None:
        self.config = config
        self.function = function if function is not None else load_entrypoint(config.entrypoint)
        self._with_sandbox = _takes_sandbox(self.function, config.entrypoint)
        self._source = _source_digest(self.function)

    def identity(self) -> str:
        digest = config_fingerprint({"entrypoint": self.config.entrypoint,
                                     "source": self._source, "version": self.config.version})
        return f"{self.name}/{VERSION}:{digest}"

    async def run(self, item: WorkItem, sandbox: Path) -> ExecutionResult:
        scope = asyncio.timeout(self.config.timeout_s)
        try:
            async with scope:
                returned = await self._call(item, sandbox)
        except ExecutorError:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and scope.expired():
                raise ExecutorError(f"{self.config.entrypoint} timed out after "
                                    f"{self.config.timeout_s}s", retryable=True,
                                    error_type="timeout") from exc
            retryable = not isinstance(exc, ValueError | TypeError)
            raise ExecutorError(f"{type(exc).__name__}: {exc}", retryable=retryable,
                                error_type="exception" if retryable else "invalid_task",
                                output=_trace(exc)) from exc
        return self._result(returned, item, sandbox)

    async def _call(self, item: WorkItem, sandbox: Path) -> Any:
        args = (item, sandbox) if self._with_sandbox else (item,)
        if inspect.iscoroutinefunction(self.function):
            returned = await self.function(*args)
        else:
            returned = await asyncio.to_thread(self.function, *args)
        if inspect.isawaitable(returned):  # a sync callable that hands back a coroutine
            returned = await returned
        return returned

    def _result(self, returned: Any, item: WorkItem, sandbox: Path) -> ExecutionResult:
        if returned is None:
            content = read_output(sandbox, item.path, self.config.max_output_bytes)
            return ExecutionResult(content=content)
        if isinstance(returned, str):
            result = ExecutionResult(content=returned)
        elif isinstance(returned, ExecutionResult):
            result = returned
        else:
            raise ExecutorError(f"{self.config.entrypoint} returned {type(returned).__name__}; "
                                "expected str, ExecutionResult or None", retryable=False,
                                error_type="bad_return")
        try:
            write_output(sandbox, item.path, result.content)
        except WorkspaceError as exc:
            raise ExecutorError(str(exc), retryable=False, error_type="invalid_path") from exc
        return result


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))[-_TRACE_CHARS:]
