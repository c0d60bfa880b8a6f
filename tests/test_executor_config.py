from pathlib import Path

import pytest

from agents.executors.config import Executors, load_executor_configs
from devline.errors import ConfigError


def test_configs_come_from_the_operator_file(tmp_path: Path) -> None:
    f = tmp_path / "executors.yaml"
    f.write_text("command:\n  argv: [python3, agent.py, '{path}']\n  timeout_s: 30\n")
    ex = Executors.from_file(f)
    assert ex.get("command").name == "command"
    assert ex.identity("command").startswith("command/1:")
    assert ex.identity("demo") == "demo/1"
    # An executor the operator did not configure is not runnable, but still keys the cache.
    assert ex.identity("http") == "http/unconfigured"
    with pytest.raises(ConfigError):
        ex.get("http")


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    assert load_executor_configs(None) == {}
    bad = tmp_path / "x.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_executor_configs(bad)
    with pytest.raises(ConfigError, match="No such file"):
        load_executor_configs(tmp_path / "missing.yaml")
