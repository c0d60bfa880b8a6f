"""Executor configuration belongs to the operator, not to plans.

A plan may choose an executor by name; what that executor runs (argv, entry point, base
URL, key) comes from the file named by `DEVLINE_EXECUTOR_CONFIG`, so submitting a plan
never means choosing a program to run on the workers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from agents.executors.registry import build_executor
from agents.types import ExecutionResult, Executor, WorkItem
from devline.errors import ConfigError, DevlineError, ExecutorError


def load_executor_configs(path: Path | None) -> dict[str, dict[str, Any]]:
    """`{executor name: config}` from a YAML or JSON file; empty when no file is given."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"executor config {path}: {exc.strerror}") from exc
    try:
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise ConfigError(f"executor config {path} is not valid: {exc}") from exc
    if not isinstance(data, Mapping) or not all(isinstance(v, Mapping) for v in data.values()):
        raise ConfigError(f"executor config {path}: expected a mapping of name -> mapping")
    return {str(k): dict(v) for k, v in data.items()}


class Executors:
    """Builds each configured executor once; `identity` feeds the result-cache key."""

    def __init__(self, configs: Mapping[str, Mapping[str, Any]]) -> None:
        self.configs = {k: dict(v) for k, v in configs.items()}
        self._built: dict[str, Executor] = {}

    @classmethod
    def from_file(cls, path: Path | None) -> Executors:
        return cls(load_executor_configs(path))

    def get(self, name: str) -> Executor:
        if name not in self._built:
            self._built[name] = build_executor(name, self.configs.get(name))
        return self._built[name]

    def identity(self, name: str) -> str:
        return _identity(self, name)

    def time_limit(self, name: str, default: float) -> float:
        """Every run has a limit: the executor's own `timeout_s` (plus a grace for it to stop
        its child), else `default`."""
        own = (self.configs.get(name) or {}).get("timeout_s")
        return float(own) + 15.0 if own else default

    async def run(self, item: WorkItem, sandbox: Path, default_limit: float) -> ExecutionResult:
        """Run `item` on its executor within its time limit; every failure becomes an
        `ExecutorError` that says whether another attempt can help."""
        limit = self.time_limit(item.executor, default_limit)
        try:
            async with asyncio.timeout(limit):
                return await self.get(item.executor).run(item, sandbox)
        except TimeoutError as exc:
            raise ExecutorError(f"{item.executor} executor ran over its time limit of "
                                f"{limit:g}s", retryable=True, error_type="timeout") from exc
        except (ExecutorError, asyncio.CancelledError):
            raise
        except DevlineError as exc:
            raise ExecutorError(str(exc), retryable=False, error_type=type(exc).__name__) from exc
        except Exception as exc:
            raise ExecutorError(f"{type(exc).__name__}: {exc}", retryable=True,
                                error_type="crash") from exc

    def available(self) -> list[str]:
        """Executor names this configuration can run (demo always; the others when the
        operator configured them)."""
        from agents.planning.rules import EXECUTORS

        out = []
        for name in EXECUTORS:
            try:
                self.get(name)
            except ConfigError:
                continue
            out.append(name)
        return out


@lru_cache(maxsize=64)
def _identity(executors: Executors, name: str) -> str:
    try:
        return executors.get(name).identity()
    except ConfigError:
        # Not configured on this host: the name alone still separates cache entries.
        return f"{name}/unconfigured"
