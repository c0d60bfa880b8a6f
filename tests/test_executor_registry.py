"""build_executor: names, config keys, clear errors."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from agents.executors.command import CommandExecutor
from agents.executors.demo import DemoExecutor
from agents.executors.http import HttpExecutor
from agents.executors.python import PythonExecutor
from agents.executors.registry import EXECUTOR_NAMES, build_executor
from agents.types import WorkItem
from devline.errors import ConfigError


def test_every_name_builds() -> None:
    assert set(EXECUTOR_NAMES) == {"demo", "command", "http", "python"}
    assert isinstance(build_executor("demo"), DemoExecutor)
    assert isinstance(build_executor("demo", {"time_scale": 0.1}), DemoExecutor)
    command = build_executor("command", {"argv": [sys.executable, "agent.py", "{path}"],
                                         "timeout_s": "30", "env_allow": "A, B",
                                         "retryable_exit_codes": [75, 69]})
    assert isinstance(command, CommandExecutor)
    assert command.config.timeout_s == 30.0
    assert command.config.env_allow == ("A", "B")
    assert command.config.retryable_exit_codes == frozenset({75, 69})
    http = build_executor("http", {"base_url": "http://127.0.0.1:11434/v1", "model": "m",
                                   "api_key": "k", "price_per_1k_tokens": 0.01})
    assert isinstance(http, HttpExecutor)
    assert "k" not in repr(http.config.api_key)
    assert isinstance(build_executor("python", {"entrypoint": "json:dumps"}), PythonExecutor)


def test_identities_are_distinct_per_executor() -> None:
    identities = {
        build_executor("demo").identity(),
        build_executor("command", {"argv": ["true"]}).identity(),
        build_executor("http", {"base_url": "http://x", "model": "m"}).identity(),
        build_executor("python", {"entrypoint": "json:dumps"}).identity(),
    }
    assert len(identities) == 4


@pytest.mark.parametrize(("name", "config", "match"), [
    ("nope", {}, "unknown executor 'nope'"),
    ("demo", {"time_scale": -1}, "time_scale"),
    ("demo", {"speed": 2}, "unknown config key"),
    ("command", {}, "'argv' is required"),
    ("command", {"argv": "agent --path {path}"}, "no shell"),
    ("command", {"argv": ["a", 3]}, "argv"),
    ("command", {"argv": ["a"], "timeout_s": "soon"}, "timeout_s"),
    ("command", {"argv": ["a"], "timeout_s": True}, "timeout_s"),
    ("command", {"argv": ["a"], "retryable_exit_codes": ["x"]}, "retryable_exit_codes"),
    ("command", {"argv": ["a"], "retryable_exit_codes": [300]}, "retryable_exit_codes"),
    ("command", {"argv": ["a"], "env": {"A": 1}}, "env"),
    ("command", {"argv": ["a"], "max_output_bytes": 1.5}, "max_output_bytes"),
    ("command", {"argv": ["a"], "argvv": ["b"]}, "argvv"),
    ("http", {"model": "m"}, "base_url"),
    ("http", {"base_url": "localhost:8000", "model": "m"}, "base_url"),
    ("http", {"base_url": "http://x", "model": "m", "api_key": "k", "api_key_env": "K"},
     "not both"),
    ("http", {"base_url": "http://x", "model": "m", "api_key_env": "DEVLINE_TEST_UNSET_KEY"},
     "DEVLINE_TEST_UNSET_KEY"),
    ("http", {"base_url": "http://x", "model": "m", "max_tokens": 0}, "max_tokens"),
    ("python", {}, "entrypoint"),
    ("python", {"entrypoint": "json"}, "module:function"),
    ("python", {"entrypoint": "json:nope"}, "nope"),
    ("command", ["argv"], "mapping"),
])
def test_bad_config_is_a_clear_config_error(name: str, config: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_executor(name, config, env={})  # type: ignore[arg-type]


def test_command_env_allow_reads_the_given_environment(tmp_path: Path) -> None:
    dump = "import json, os; json.dump(dict(os.environ), open(os.environ['DEVLINE_OUTPUT'], 'w'))"
    ex = build_executor("command", {"argv": [sys.executable, "-c", dump],
                                    "env_allow": ["ALLOWED"]},
                        env={"ALLOWED": "yes", "OTHER": "no"})
    env = json.loads(asyncio.run(ex.run(WorkItem("p", "t", "env.json"), tmp_path)).content)
    assert env["ALLOWED"] == "yes" and "OTHER" not in env


def test_string_values_as_plan_options_carry_them() -> None:
    ex = build_executor("command", {"argv": '["agent", "--out", "{path}"]', "timeout_s": "45",
                                    "env": '{"MODE": "fast"}', "retryable_exit_codes": "75,69"})
    assert isinstance(ex, CommandExecutor)
    assert ex.config.argv == ("agent", "--out", "{path}")
    assert ex.config.env == {"MODE": "fast"} and ex.config.timeout_s == 45.0
    assert ex.config.retryable_exit_codes == frozenset({75, 69})
    with pytest.raises(ConfigError, match="no shell"):
        build_executor("command", {"argv": "[broken json"})
