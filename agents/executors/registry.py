"""Build an executor by name from a plain config mapping (YAML, JSON, flags).

Config keys (anything else is a `ConfigError`, so typos do not pass silently). Values may
be strings, as plan options are: numbers are parsed, lists may be JSON (`["a", "b"]`) or,
except argv, comma-separated, mappings JSON objects.

demo
    time_scale (float >= 0, default 1.0) — multiplies simulated durations.
    journal (a file path) — appends one JSON line per run start and finish (chaos runs
    count executor runs with it; not part of the identity).
command
    argv (list of str, required; never a string — there is no shell),
    timeout_s (600), grace_s (5; SIGTERM → SIGKILL), env_allow (names passed through from
    the worker's environment), env (constant name → value; no secrets here: it is part of
    the identity), retryable_exit_codes ([75]), max_output_bytes (4 MiB),
    log_tail_bytes (8192), version (free text; change it to invalidate cached results).
http
    base_url (required, e.g. http://127.0.0.1:11434/v1), model (required),
    api_key or api_key_env (the name of the variable holding it; read when building),
    timeout_s (300), system_prompt, temperature, max_tokens, price_per_1k_tokens,
    max_context_chars (60000), max_response_bytes (8 MiB), version.
python
    entrypoint (`module:function`, required), timeout_s (none), max_output_bytes, version.

Each executor's `identity()` is `name/version:hash`, the hash covering the config that can
change the produced file and never a secret; it is part of the result-cache key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import SecretStr

from agents.executors.command import CommandConfig, CommandExecutor
from agents.executors.demo import DemoExecutor
from agents.executors.http import HttpConfig, HttpExecutor
from agents.executors.python import PythonConfig, PythonExecutor
from agents.types import Executor
from devline.errors import ConfigError

_MISSING: Any = object()


class _Keys:
    """Typed reads from one executor's config mapping; every error names the key."""

    def __init__(self, executor: str, config: Mapping[str, Any]) -> None:
        if not isinstance(config, Mapping):
            raise ConfigError(f"executor {executor!r}: config must be a mapping")
        self.executor = executor
        self.values = dict(config)
        self.read: set[str] = set()

    def _error(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"executor {self.executor!r}: {key!r} must be {expected}, "
                           f"got {self.values.get(key)!r}")

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self.read.add(key)
        if key in self.values and self.values[key] is not None:
            return self.values[key]
        if default is _MISSING:
            raise ConfigError(f"executor {self.executor!r}: {key!r} is required")
        return default

    def number(self, key: str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is None or value is default:
            return value
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError):
            raise self._error(key, "a number") from None

    def integer(self, key: str, default: Any = _MISSING) -> Any:
        value = self.number(key, default)
        if value is None or value is default:
            return value
        if not float(value).is_integer():
            raise self._error(key, "a whole number")
        return int(value)

    def string(self, key: str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is not None and value is not default and not isinstance(value, str):
            raise self._error(key, "a string")
        return value

    def strings(self, key: str, *, allow_csv: bool, required: bool = False) -> tuple[str, ...]:
        value = _json_text(self.raw(key) if required else self.raw(key, ()), "[")
        if isinstance(value, str):
            if not allow_csv:
                raise self._error(key, "a list of strings (there is no shell to split it)")
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self._error(key, "a list of strings")
        return tuple(value)

    def integers(self, key: str, default: tuple[int, ...]) -> frozenset[int]:
        value = self.raw(key, default)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, int):
            value = [value]
        try:
            if isinstance(value, bool) or any(isinstance(v, bool | float) for v in value):
                raise TypeError
            return frozenset(int(v) for v in value)
        except (TypeError, ValueError):
            raise self._error(key, "a list of whole numbers") from None

    def mapping(self, key: str) -> dict[str, str]:
        value = _json_text(self.raw(key, {}), "{")
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise self._error(key, "a mapping of strings to strings")
        return dict(value)

    def done(self) -> None:
        unknown = sorted(set(self.values) - self.read)
        if unknown:
            raise ConfigError(f"executor {self.executor!r}: unknown config key(s) "
                              f"{', '.join(map(repr, unknown))}; known: "
                              f"{', '.join(sorted(self.read))}")


def _json_text(value: Any, opener: str) -> Any:
    """Decode a JSON list/object given as text (plan options are strings), else `value`."""
    if isinstance(value, str) and value.lstrip().startswith(opener):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _demo(keys: _Keys, env: Mapping[str, str]) -> Executor:
    scale = keys.number("time_scale", 1.0)
    journal = keys.raw("journal", None)
    keys.done()
    if scale < 0:
        raise ConfigError("executor 'demo': 'time_scale' must be >= 0")
    return DemoExecutor(time_scale=scale, journal=str(journal) if journal else None)


def _command(keys: _Keys, env: Mapping[str, str]) -> Executor:
    config = CommandConfig(
        argv=keys.strings("argv", allow_csv=False, required=True),
        timeout_s=keys.number("timeout_s", 600.0),
        grace_s=keys.number("grace_s", 5.0),
        env_allow=keys.strings("env_allow", allow_csv=True),
        env=keys.mapping("env"),
        retryable_exit_codes=keys.integers("retryable_exit_codes", (75,)),
        max_output_bytes=keys.integer("max_output_bytes", CommandConfig.max_output_bytes),
        log_tail_bytes=keys.integer("log_tail_bytes", CommandConfig.log_tail_bytes),
        version=keys.string("version", ""),
    )
    keys.done()
    return CommandExecutor(config, environ=env)


def _http(keys: _Keys, env: Mapping[str, str]) -> Executor:
    api_key = keys.raw("api_key", None)
    key_env = keys.string("api_key_env", None)
    if api_key is not None and key_env is not None:
        raise ConfigError("executor 'http': give api_key or api_key_env, not both")
    if key_env is not None:
        api_key = env.get(key_env)
        if not api_key:
            raise ConfigError(f"executor 'http': environment variable {key_env!r} "
                              "(api_key_env) is not set")
    if isinstance(api_key, str):
        api_key = SecretStr(api_key)
    elif api_key is not None and not isinstance(api_key, SecretStr):
        raise ConfigError("executor 'http': 'api_key' must be a string")
    config = HttpConfig(
        base_url=keys.string("base_url"),
        model=keys.string("model"),
        api_key=api_key,
        timeout_s=keys.number("timeout_s", 300.0),
        system_prompt=keys.string("system_prompt", None),
        temperature=keys.number("temperature", None),
        max_tokens=keys.integer("max_tokens", None),
        price_per_1k_tokens=keys.number("price_per_1k_tokens", None),
        max_context_chars=keys.integer("max_context_chars", HttpConfig.max_context_chars),
        max_response_bytes=keys.integer("max_response_bytes", HttpConfig.max_response_bytes),
        version=keys.string("version", ""),
    )
    keys.done()
    return HttpExecutor(config)


def _python(keys: _Keys, env: Mapping[str, str]) -> Executor:
    config = PythonConfig(
        entrypoint=keys.string("entrypoint"),
        timeout_s=keys.number("timeout_s", None),
        max_output_bytes=keys.integer("max_output_bytes", PythonConfig.max_output_bytes),
        version=keys.string("version", ""),
    )
    keys.done()
    return PythonExecutor(config)


_BUILDERS: dict[str, Callable[[_Keys, Mapping[str, str]], Executor]] = {
    "demo": _demo, "command": _command, "http": _http, "python": _python,
}
EXECUTOR_NAMES = tuple(_BUILDERS)


def build_executor(name: str, config: Mapping[str, Any] | None = None, *,
                   env: Mapping[str, str] | None = None) -> Executor:
    """The executor called `name`, configured from `config`; `ConfigError` if it cannot be.

    `env` is where `api_key_env` is looked up (now) and `env_allow` names are (per task);
    default: the process environment.
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(_BUILDERS)}")
    return builder(_Keys(name, config or {}), os.environ if env is None else env)
