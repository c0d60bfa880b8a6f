"""The python executor: entry points, return forms, error classification."""

from __future__ import annotations

import asyncio
import itertools
import textwrap
import time
from pathlib import Path

import pytest

from agents.executors.python import PythonConfig, PythonExecutor
from agents.executors.registry import build_executor
from agents.types import ExecutionResult, WorkItem
from devline.errors import ConfigError, ExecutorError

_counter = itertools.count()

ENTRY_POINTS = '''
import asyncio, time
from pathlib import Path
from agents.types import ExecutionResult
from devline.errors import ExecutorError


def upper(item):
    return (item.description or "").upper()


async def with_sandbox(item, sandbox):
    await asyncio.sleep(0)
    return ExecutionResult(content=f"# {item.path} in {sandbox.name}\\n", tokens=42)


def writes_itself(item, sandbox):
    target = Path(sandbox, item.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("written by the function\\n")


def writes_nothing(item, sandbox):
    return None


def bad_input(item):
    raise ValueError("description must mention a table")


def crashes(item):
    raise RuntimeError("model server hiccup 0x7f3a at 12:01:02")


def own_timeout(item):
    raise TimeoutError("socket read timed out")


def chooses(item):
    raise ExecutorError("quota", retryable=True, error_type="rate_limited", retry_after=9.0)


async def sleeps(item):
    await asyncio.sleep(30)


def blocks(item):
    time.sleep(0.3)
    return "slept"


def returns_number(item):
    return 42


def three_args(a, b, c):
    return ""


class Agent:
    @staticmethod
    def generate(item, sandbox):
        return "from a class"


not_callable = 3
'''


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, uniquely named module of entry points on sys.path."""
    name = f"devline_entry_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(ENTRY_POINTS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    path = tmp_path / "sandbox"
    path.mkdir()
    return path


def item(**kw: object) -> WorkItem:
    return WorkItem(plan_id="p", task_id="t", path="pkg/out.py",  # type: ignore[arg-type]
                    description="make tables", **kw)


def run(entrypoint: str, sandbox: Path, **kw: object) -> ExecutionResult:
    ex = PythonExecutor(PythonConfig(entrypoint=entrypoint, **kw))  # type: ignore[arg-type]
    return asyncio.run(ex.run(item(), sandbox))


def failure(entrypoint: str, sandbox: Path, **kw: object) -> ExecutorError:
    with pytest.raises(ExecutorError) as caught:
        run(entrypoint, sandbox, **kw)
    return caught.value


def test_sync_function_returning_str(module: str, sandbox: Path) -> None:
    result = run(f"{module}:upper", sandbox)
    assert result.content == "MAKE TABLES"
    assert (sandbox / "pkg" / "out.py").read_text() == "MAKE TABLES"


def test_async_function_with_sandbox_returning_a_result(module: str, sandbox: Path) -> None:
    result = run(f"{module}:with_sandbox", sandbox)
    assert result.content == "# pkg/out.py in sandbox\n" and result.tokens == 42


def test_function_that_writes_the_file_itself(module: str, sandbox: Path) -> None:
    assert run(f"{module}:writes_itself", sandbox).content == "written by the function\n"
    (sandbox / "empty").mkdir()
    assert failure(f"{module}:writes_nothing", sandbox / "empty").error_type == "no_output"


def test_class_attribute_entrypoint(module: str, sandbox: Path) -> None:
    assert run(f"{module}:Agent.generate", sandbox).content == "from a class"


@pytest.mark.parametrize(("function", "retryable", "error_type"), [
    ("bad_input", False, "invalid_task"),
    ("crashes", True, "exception"),
    ("own_timeout", True, "exception"),
    ("returns_number", False, "bad_return"),
])
def test_error_classification(module: str, sandbox: Path, function: str, retryable: bool,
                              error_type: str) -> None:
    error = failure(f"{module}:{function}", sandbox)
    assert (error.retryable, error.error_type) == (retryable, error_type)


def test_traceback_is_kept_as_output(module: str, sandbox: Path) -> None:
    error = failure(f"{module}:crashes", sandbox)
    assert str(error).startswith("RuntimeError: model server hiccup")
    assert "Traceback" in (error.output or "") and "def crashes" not in str(error)


def test_executor_error_passes_through(module: str, sandbox: Path) -> None:
    error = failure(f"{module}:chooses", sandbox)
    assert (error.error_type, error.retry_after, error.retryable) == ("rate_limited", 9.0, True)


def test_timeout_is_retryable(module: str, sandbox: Path) -> None:
    started = time.monotonic()
    error = failure(f"{module}:sleeps", sandbox, timeout_s=0.2)
    assert time.monotonic() - started < 5
    assert error.retryable and error.error_type == "timeout"


def test_sync_functions_do_not_block_the_event_loop(module: str, sandbox: Path) -> None:
    ex = PythonExecutor(PythonConfig(entrypoint=f"{module}:blocks"))

    async def two_at_once() -> list[ExecutionResult]:
        return await asyncio.gather(ex.run(item(), sandbox / "a"), ex.run(item(), sandbox / "b"))

    (sandbox / "a").mkdir()
    (sandbox / "b").mkdir()
    started = time.monotonic()
    results = asyncio.run(two_at_once())
    assert [r.content for r in results] == ["slept", "slept"]
    assert time.monotonic() - started < 0.55


def test_stdlib_entrypoint_type_error_is_not_retryable(sandbox: Path) -> None:
    error = failure("json:dumps", sandbox)  # a WorkItem is not JSON-serialisable
    assert not error.retryable and error.error_type == "invalid_task"


@pytest.mark.parametrize("entrypoint", [
    "no_colon", ":f", "mod:", "devline_no_such_module_xyz:f", "json:no_such_function",
    "{module}:not_callable", "{module}:three_args",
])
def test_bad_entrypoints_are_config_errors(module: str, entrypoint: str) -> None:
    with pytest.raises(ConfigError):
        PythonExecutor(PythonConfig(entrypoint=entrypoint.format(module=module)))


def test_identity_follows_the_source(module: str, tmp_path: Path) -> None:
    before = build_executor("python", {"entrypoint": f"{module}:upper"}).identity()
    assert before.startswith("python/1:")
    assert before == build_executor("python", {"entrypoint": f"{module}:upper"}).identity()
    source = tmp_path / f"{module}.py"
    source.write_text(source.read_text() + "\n# edited\n")
    assert before != build_executor("python", {"entrypoint": f"{module}:upper"}).identity()
