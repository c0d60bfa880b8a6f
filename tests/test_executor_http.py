"""The http executor against a fake chat-completions server on a real socket."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_llm import FakeLLM, Reply
from pydantic import SecretStr

from agents.executors.http import (
    HttpConfig,
    HttpExecutor,
    code_blocks,
    extract_code,
    parse_retry_after,
    user_prompt,
)
from agents.executors.registry import build_executor
from agents.types import DepContext, ExecutionResult, WorkItem
from devline.errors import ConfigError, ExecutorError

KEY = "sk-test-0123456789"

APP_REPLY = """Sure! First install the dependency:

```bash
pip install requests
```

Here is the file:

```python src/app.py
from src.models import User


def greet(user: User) -> str:
    return f"hello {user.name}"
```

Let me know if you need anything else."""


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


def work(**kw: object) -> WorkItem:
    defaults: dict[str, object] = {
        "plan_id": "p1", "task_id": "t1", "path": "src/app.py", "language": "python",
        "description": "Greet a user by name.",
        "context": (
            DepContext("src/models.py", "a1" * 32,
                       content="class User:\n    def __init__(self, name: str): ..."),
            DepContext("src/db.py", "b2" * 32, interface="def connect(url: str) -> Conn: ..."),
        ),
    }
    defaults.update(kw)
    return WorkItem(**defaults)  # type: ignore[arg-type]


def executor(llm: FakeLLM, **kw: object) -> HttpExecutor:
    config: dict[str, object] = {"base_url": llm.base_url, "model": "coder-7b",
                                 "api_key": SecretStr(KEY), "timeout_s": 5.0}
    config.update(kw)
    return HttpExecutor(HttpConfig(**config))  # type: ignore[arg-type]


def run(ex: HttpExecutor, tmp_path: Path, item: WorkItem | None = None) -> ExecutionResult:
    return asyncio.run(ex.run(item or work(), tmp_path))


def failure(ex: HttpExecutor, tmp_path: Path) -> ExecutorError:
    with pytest.raises(ExecutorError) as caught:
        run(ex, tmp_path)
    return caught.value


def test_success_extracts_the_file_and_counts_tokens(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(Reply.ok(APP_REPLY))
    result = run(executor(llm, price_per_1k_tokens=0.002), tmp_path)

    assert result.content.startswith("from src.models import User\n")
    assert "pip install" not in result.content
    assert result.content.endswith('return f"hello {user.name}"\n')
    assert result.tokens == 150
    assert result.cost == pytest.approx(150 * 0.002 / 1000)
    assert (tmp_path / "src" / "app.py").read_text() == result.content


def test_request_carries_model_bearer_key_and_dependency_context(llm: FakeLLM,
                                                                 tmp_path: Path) -> None:
    run(executor(llm, temperature=0.2, max_tokens=2048), tmp_path)

    [request] = llm.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "coder-7b"
    assert request.body["temperature"] == 0.2 and request.body["max_tokens"] == 2048
    system, user = request.body["messages"]
    assert (system["role"], user["role"]) == ("system", "user")
    assert "src/app.py" in user["content"] and "Greet a user by name." in user["content"]
    assert "python" in user["content"]
    assert "class User:\n    def __init__(self, name: str): ..." in user["content"]
    assert "def connect(url: str) -> Conn: ..." in user["content"]
    assert "src/models.py" in user["content"] and "src/db.py" in user["content"]


def test_no_key_sends_no_authorization_header(llm: FakeLLM, tmp_path: Path) -> None:
    run(executor(llm, api_key=None), tmp_path)
    assert "Authorization" not in llm.requests[0].headers


def test_rate_limit_with_retry_after_seconds(llm: FakeLLM, tmp_path: Path) -> None:
    llm.rate_limit_first(2, retry_after="7")
    ex = executor(llm)
    for _ in range(2):
        error = failure(ex, tmp_path)
        assert error.retryable and error.error_type == "rate_limited"
        assert error.retry_after == 7.0
        assert "rate limit reached" in str(error)
    assert run(ex, tmp_path).content  # the third call goes through
    assert len(llm.requests) == 3


def test_rate_limit_with_retry_after_http_date(llm: FakeLLM, tmp_path: Path) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    llm.script(Reply.rate_limited(retry_after=when))
    error = failure(executor(llm), tmp_path)
    assert error.error_type == "rate_limited"
    assert error.retry_after is not None and 25 <= error.retry_after <= 31


def test_rate_limit_without_retry_after(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(Reply.rate_limited(retry_after=None))
    error = failure(executor(llm), tmp_path)
    assert error.retryable and error.retry_after is None


@pytest.mark.parametrize(("status", "retryable", "error_type"), [
    (500, True, "server_error"),
    (502, True, "server_error"),
    (503, True, "server_error"),
    (408, True, "timeout"),
    (400, False, "bad_request"),
    (404, False, "bad_request"),
    (422, False, "bad_request"),
    (401, False, "auth"),
    (403, False, "auth"),
])
def test_status_classification(llm: FakeLLM, tmp_path: Path, status: int, retryable: bool,
                               error_type: str) -> None:
    llm.script(Reply.error(status, f"failure {status}"))
    error = failure(executor(llm), tmp_path)
    assert (error.retryable, error.error_type) == (retryable, error_type)
    assert f"HTTP {status}" in str(error) and f"failure {status}" in str(error)


def test_server_error_passes_retry_after_on(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(Reply.error(503, "overloaded", headers={"retry-after": "12"}))
    error = failure(executor(llm), tmp_path)
    assert error.retryable and error.retry_after == 12.0


def test_an_echoed_key_is_redacted(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(Reply.error(401, f"Incorrect API key provided: {KEY}"))
    error = failure(executor(llm), tmp_path)
    assert KEY not in str(error) and KEY not in (error.output or "")
    assert "***" in str(error)


def test_slow_server_times_out_as_retryable(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(Reply.slow(5.0))
    started = time.monotonic()
    error = failure(executor(llm, timeout_s=0.3), tmp_path)
    assert time.monotonic() - started < 3
    assert error.retryable and error.error_type == "timeout"


def test_connection_refused_is_retryable(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ex = HttpExecutor(HttpConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m"))
    error = failure(ex, tmp_path)
    assert error.retryable and error.error_type == "connection"


def test_malformed_body_is_retryable(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(Reply(body=b"<html>bad gateway</html>"))
    error = failure(executor(llm), tmp_path)
    assert error.retryable and error.error_type == "bad_response"


def test_truncated_reply_is_retryable(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(Reply(content="```python\ndef half(", finish_reason="length"))
    error = failure(executor(llm), tmp_path)
    assert error.retryable and error.error_type == "truncated"


def test_a_reply_without_usage_has_no_tokens(llm: FakeLLM, tmp_path: Path) -> None:
    llm.script(Reply(content="x = 1", usage=None))
    result = run(executor(llm, price_per_1k_tokens=1.0), tmp_path)
    assert (result.content, result.tokens, result.cost) == ("x = 1\n", None, None)


def test_api_key_env_through_the_registry(llm: FakeLLM, tmp_path: Path) -> None:
    config = {"base_url": llm.base_url, "model": "coder-7b", "api_key_env": "MY_LLM_KEY"}
    one = build_executor("http", config, env={"MY_LLM_KEY": "sk-one"})
    two = build_executor("http", config, env={"MY_LLM_KEY": "sk-two"})
    asyncio.run(one.run(work(), tmp_path))
    assert llm.requests[0].headers["Authorization"] == "Bearer sk-one"
    assert one.identity() == two.identity()
    assert "sk-one" not in one.identity() and "sk-one" not in repr(vars(one))
    with pytest.raises(ConfigError, match="MY_LLM_KEY"):
        build_executor("http", config, env={})


def test_identity_follows_model_not_key_or_timeout(llm: FakeLLM) -> None:
    base = executor(llm)
    assert base.identity().startswith("http/1:")
    assert base.identity() == executor(llm, api_key=SecretStr("other"), timeout_s=9).identity()
    assert base.identity() != executor(llm, model="coder-34b").identity()
    assert base.identity() != executor(llm, system_prompt="be terse").identity()


# --- prompt and reply parsing (no server) ------------------------------------------------


def test_prompt_respects_the_context_budget() -> None:
    big = DepContext("src/big.py", "c3" * 32, content="x" * 5000, interface="def big(): ...")
    gone = DepContext("src/gone.py", "d4" * 32)
    prompt = user_prompt(work(context=(big, gone)), max_context_chars=1000)
    assert "x" * 5000 not in prompt and "def big(): ..." in prompt
    assert "src/gone.py" in prompt and "d4d4d4d4d4d4" in prompt


def test_prompt_for_a_fix_shows_the_current_content() -> None:
    prompt = user_prompt(work(kind="fix", attempt=2, content="def f(:\n"), 10_000)
    assert "fix" in prompt and "def f(:" in prompt


def test_extract_prefers_the_block_naming_the_path() -> None:
    reply = "```python\nother = 1\n```\n\n```python title=src/app.py\nmine = 2\n```"
    assert extract_code(reply, "src/app.py", "python") == "mine = 2\n"


def test_extract_prefers_the_block_in_the_language() -> None:
    reply = "```sh\nnpm i\n```\n```ts\nexport const a = 1;\n```\n```ts\nlater\n```"
    assert extract_code(reply, "src/a.ts", None) == "export const a = 1;\n"


def test_extract_falls_back_to_the_first_block_then_the_whole_reply() -> None:
    assert extract_code("text\n```\nfirst\n```\n```\nsecond\n```", "a.py", None) == "first\n"
    assert extract_code("  print('bare')  \n", "a.py", None) == "print('bare')\n"


def test_extract_handles_longer_fences_and_unclosed_blocks() -> None:
    reply = "````markdown\n# Title\n```python\ncode\n```\n````"
    assert extract_code(reply, "README.md", None) == "# Title\n```python\ncode\n```\n"
    assert code_blocks("```python\ndef cut(") == [("python", "def cut(")]


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    for junk in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(junk) is None


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        HttpConfig(base_url="ftp://x", model="m")
    with pytest.raises(ConfigError):
        HttpConfig(base_url="http://x", model="")
    with pytest.raises(ConfigError):
        HttpConfig(base_url="http://x", model="m", timeout_s=0)


def test_an_unsafe_path_is_rejected_before_calling_the_model(llm: FakeLLM,
                                                             tmp_path: Path) -> None:
    with pytest.raises(ExecutorError) as caught:
        run(executor(llm), tmp_path, work(path="../outside.py"))
    assert caught.value.error_type == "invalid_path" and not caught.value.retryable
    assert llm.requests == []
