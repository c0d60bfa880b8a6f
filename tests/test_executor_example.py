"""examples/executors/agent-wrapper.py driven by the command executor, with a fake agent."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from agents.executors.command import CommandConfig, CommandExecutor
from agents.types import DepContext, ExecutionResult, WorkItem
from devline.errors import ExecutorError

WRAPPER = Path(__file__).resolve().parents[1] / "examples" / "executors" / "agent-wrapper.py"

FAKE_AGENT = """
import os, sys
prompt = sys.argv[-1]
if "FAIL" in prompt:
    sys.exit(1)
if "LAZY" not in prompt:
    with open(os.environ["DEVLINE_TASK_PATH"], "w") as fh:
        fh.write("# from the agent\\n# " + prompt.replace("\\n", "\\n# ") + "\\n")
        fh.write("# saw dependency file: " + str(os.path.exists("lib/util.py")) + "\\n")
"""


def item(**kw: object) -> WorkItem:
    defaults: dict[str, object] = {"plan_id": "p", "task_id": "t", "path": "app/main.py",
                                   "description": "Print the answer.", "language": "python"}
    defaults.update(kw)
    return WorkItem(**defaults)  # type: ignore[arg-type]


def run(work: WorkItem, sandbox: Path, agent_cmd: str | None = None) -> ExecutionResult:
    env = {"DEVLINE_AGENT_CMD": agent_cmd} if agent_cmd else {}
    executor = CommandExecutor(CommandConfig(argv=(sys.executable, str(WRAPPER)), env=env,
                                             timeout_s=30))
    return asyncio.run(executor.run(work, sandbox))


@pytest.fixture
def agent(tmp_path: Path) -> str:
    script = tmp_path / "fake_agent.py"
    script.write_text(FAKE_AGENT)
    return json.dumps([sys.executable, str(script), "--model", "x", "{prompt}"])


def test_wrapper_is_an_executable_script() -> None:
    assert os.access(WRAPPER, os.X_OK)
    assert WRAPPER.read_text().startswith("#!/usr/bin/env python3\n")


def test_without_an_agent_the_plan_content_is_written(tmp_path: Path) -> None:
    assert run(item(content="print(42)\n"), tmp_path).content == "print(42)\n"


def test_without_an_agent_or_content_a_stub_is_written(tmp_path: Path) -> None:
    content = run(item(), tmp_path).content
    assert content.startswith("# app/main.py: stub") and "# Print the answer." in content


def test_the_agent_gets_a_prompt_with_the_dependencies(tmp_path: Path, agent: str) -> None:
    deps = (DepContext("lib/util.py", "ab" * 32, content="def answer() -> int: ..."),
            DepContext("lib/api.py", "cd" * 32, interface="class Api: ..."))
    content = run(item(context=deps), tmp_path, agent).content
    assert content.startswith("# from the agent")
    assert "Print the answer." in content and "lib/util.py" in content
    assert "class Api: ..." in content
    assert "saw dependency file: True" in content


@pytest.mark.parametrize("description", [
    "FAIL please",  # the agent exits non-zero
    "be LAZY",      # the agent writes nothing
])
def test_agent_failures_ask_for_a_retry(tmp_path: Path, agent: str, description: str) -> None:
    with pytest.raises(ExecutorError) as caught:
        run(item(description=description), tmp_path, agent)
    assert caught.value.retryable and caught.value.error_type == "tempfail"


def test_a_missing_agent_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError) as caught:
        run(item(), tmp_path, "/nonexistent/agent-cli -p")
    assert not caught.value.retryable and "EX_CONFIG" in str(caught.value)
    assert "cannot start" in (caught.value.output or "")
