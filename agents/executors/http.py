"""The `http` executor: an OpenAI-compatible chat-completions endpoint writes the file.

Works with OpenAI, vLLM, Ollama, LM Studio and anything else that serves
`POST {base_url}/chat/completions`. The user prompt carries the task (path, description,
language, current content) and the dependency context (content or interface of each finished
dependency), so the model writes code against real signatures. The file is taken from the
reply's fenced code block (see `extract_code`).

Failures: 429 → retryable `rate_limited` with `retry_after` from the `Retry-After` header
(seconds or an HTTP date); 408, 5xx, connection errors and timeouts → retryable; 401/403 →
`auth`, other 4xx → `bad_request`, both not retryable. The API key is sent only as an
`Authorization: Bearer` header; it is never logged, never part of `identity()`, and is
redacted from any error text the server echoes back.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from agents.executors.fingerprint import config_fingerprint
from agents.executors.sandbox import check_relative, write_output
from agents.types import ExecutionResult, WorkItem
from devline.errors import ConfigError, ExecutorError, WorkspaceError

if TYPE_CHECKING:
    import aiohttp

VERSION = 1
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_ERROR_TEXT_CHARS = 500


@dataclass(frozen=True)
class HttpConfig:
    """Where the model lives and how to talk to it."""

    base_url: str
    model: str
    api_key: SecretStr | None = None
    timeout_s: float = 300.0
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    price_per_1k_tokens: float | None = None
    max_context_chars: int = 60_000
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    version: str = ""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"http: base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.model:
            raise ConfigError("http: model is required")
        if self.timeout_s <= 0 or self.max_context_chars < 0 or self.max_response_bytes <= 0:
            raise ConfigError("http: timeout_s and max_response_bytes must be > 0, "
                              "max_context_chars >= 0")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ConfigError("http: max_tokens must be > 0")
        if self.price_per_1k_tokens is not None and self.price_per_1k_tokens < 0:
            raise ConfigError("http: price_per_1k_tokens must be >= 0")

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or HTTP-date), else None."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


DEFAULT_SYSTEM_PROMPT = (
    "You are a senior software engineer working on one file of a larger project. "
    "Write the complete content of exactly the file you are asked for, using the real names "
    "and signatures of the files it depends on. Reply with one fenced code block holding the "
    "whole file, and nothing else."
)
_LANGUAGE_TAGS = {
    "python": ("python", "py", "python3"), "javascript": ("javascript", "js", "jsx", "node"),
    "typescript": ("typescript", "ts", "tsx"), "go": ("go", "golang"), "rust": ("rust", "rs"),
    "shell": ("shell", "sh", "bash", "zsh"), "yaml": ("yaml", "yml"), "json": ("json",),
    "toml": ("toml",), "markdown": ("markdown", "md"), "java": ("java",), "c": ("c", "h"),
    "cpp": ("cpp", "c++", "cc", "cxx", "hpp"), "ruby": ("ruby", "rb"), "sql": ("sql",),
    "html": ("html",), "css": ("css",),
}
_SUFFIX_LANGUAGE = {
    ".py": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".jsx": "javascript", ".ts": "typescript", ".tsx": "typescript", ".go": "go",
    ".rs": "rust", ".sh": "shell", ".yaml": "yaml", ".yml": "yaml", ".json": "json",
    ".toml": "toml", ".md": "markdown", ".java": "java", ".c": "c", ".h": "c",
    ".cpp": "cpp", ".hpp": "cpp", ".rb": "ruby", ".sql": "sql", ".html": "html",
    ".css": "css",
}
_OPEN_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_CLOSE_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*$")


def language_of(path: str, language: str | None) -> str | None:
    """The task's language: as given, else guessed from the file suffix."""
    return language or _SUFFIX_LANGUAGE.get(PurePosixPath(path).suffix.lower())


def _fenced(body: str, tag: str | None) -> str:
    """`body` in a code fence longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{tag or ''}\n{body.rstrip()}\n{fence}"


def user_prompt(item: WorkItem, max_context_chars: int) -> str:
    """The task in words, with the dependency context, within a character budget."""
    lang = language_of(item.path, item.language)
    lines = [f"Write the file `{item.path}`" + (f" ({lang})." if lang else ".")]
    if item.description:
        lines += ["", "What it must do:", item.description.strip()]
    if item.kind == "fix" and item.fix is not None:
        fx = item.fix
        lines += ["", f"This is fix {fx.fix_attempt}: the version below failed the "
                      f"`{fx.check}` check (`{fx.command}`): {fx.summary}"]
        if fx.reverted:
            lines.append("The previous fix made it worse and was reverted; try another way.")
        if fx.history:
            lines += ["Earlier attempts:", *(f"- {h}" for h in fx.history)]
        lines += ["", "Check output:", _fenced(fx.output, None), "",
                  "Version to fix:", _fenced(fx.content, lang),
                  "", "Return the corrected file."]
    elif item.kind == "fix":
        lines += ["", f"This is a fix (attempt {item.attempt}): the current version failed "
                      "its checks. Return the corrected file."]
    elif item.attempt > 1:
        lines += ["", f"This is attempt {item.attempt}; an earlier attempt failed."]
    if item.content:
        lines += ["", "Current content of the file:", _fenced(item.content, lang)]
    if item.context:
        lines += ["", "It depends on these files, which already exist. Import from them and "
                      "use their real names and signatures; do not redefine them."]
        budget = max_context_chars
        for dep in item.context:
            dep_lang = language_of(dep.path, None)
            lines += ["", f"### `{dep.path}`"]
            if dep.content is not None and len(dep.content) <= budget:
                lines.append(_fenced(dep.content, dep_lang))
                budget -= len(dep.content)
            elif dep.interface is not None and len(dep.interface) <= budget:
                lines += ["Public interface:", _fenced(dep.interface, dep_lang)]
                budget -= len(dep.interface)
            else:
                lines.append(f"(not shown: too large or unavailable; "
                             f"content hash {dep.content_hash[:12]})")
    lines += ["", f"Reply with the complete content of `{item.path}` in one fenced code block."]
    return "\n".join(lines)


def build_messages(item: WorkItem, system_prompt: str | None,
                   max_context_chars: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_prompt or DEFAULT_SYSTEM_PROMPT},
            {"role": "user", "content": user_prompt(item, max_context_chars)}]


def code_blocks(text: str) -> list[tuple[str, str]]:
    """Fenced code blocks of a Markdown reply as (info string, body); an unclosed one runs
    to the end (a reply cut short still yields its code)."""
    blocks: list[tuple[str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _OPEN_FENCE.match(lines[i])
        i += 1
        if not opening or (opening[1][0] == "`" and "`" in opening[2]):
            continue
        fence, body = opening[1], []
        while i < len(lines):
            closing = _CLOSE_FENCE.match(lines[i])
            i += 1
            if closing and closing[1][0] == fence[0] and len(closing[1]) >= len(fence):
                break
            body.append(lines[i - 1])
        blocks.append((opening[2].strip(), "\n".join(body)))
    return blocks


def extract_code(reply: str, path: str, language: str | None) -> str:
    """The file in a reply: the first code block naming the path, else the first in the
    task's language, else the first block; the whole reply when there is no block."""
    blocks = code_blocks(reply)
    if not blocks:
        return reply.strip() + "\n"
    lang = language_of(path, language)
    tags = set(_LANGUAGE_TAGS.get(lang or "", ())) | ({lang.lower()} if lang else set())
    name = PurePosixPath(path).name

    def score(info: str) -> int:
        words = re.split(r"[\s:=\"']+", info)
        if path in words or name in words:
            return 2
        return 1 if words and words[0].lower() in tags else 0

    best = max(range(len(blocks)), key=lambda i: (score(blocks[i][0]), -i))
    return blocks[best][1].rstrip("\n") + "\n"


class HttpExecutor:
    """Asks a chat-completions endpoint for the file and writes it into the sandbox."""

    name = "http"

    def __init__(self, config: HttpConfig) -> None:
        self.config = config

    def identity(self) -> str:
        """Name, version and a hash of what shapes the reply (never the key or timeouts)."""
        c = self.config
        digest = config_fingerprint({
            "base_url": c.base_url.rstrip("/"), "model": c.model,
            "system_prompt": c.system_prompt, "temperature": c.temperature,
            "max_tokens": c.max_tokens, "max_context_chars": c.max_context_chars,
            "version": c.version,
        })
        return f"{self.name}/{VERSION}:{digest}"

    async def run(self, item: WorkItem, sandbox: Path) -> ExecutionResult:
        c = self.config
        try:
            check_relative(item.path)  # before paying for tokens
        except WorkspaceError as exc:
            raise ExecutorError(str(exc), retryable=False, error_type="invalid_path") from exc
        body: dict[str, Any] = {
            "model": c.model,
            "messages": build_messages(item, c.system_prompt, c.max_context_chars),
        }
        if c.temperature is not None:
            body["temperature"] = c.temperature
        if c.max_tokens is not None:
            body["max_tokens"] = c.max_tokens
        status, headers, raw = await self._post(body)
        if status != 200:
            raise self._status_error(status, headers, raw)
        reply, finish, tokens = self._parse(raw)
        if finish == "length":
            raise ExecutorError("the reply was cut off at max_tokens", retryable=True,
                                error_type="truncated", output=self._redact(reply[-500:]))
        content = extract_code(reply, item.path, item.language)
        if not content.strip():
            raise ExecutorError("the model replied with no code", retryable=True,
                                error_type="empty_reply")
        try:
            write_output(sandbox, item.path, content)
        except WorkspaceError as exc:
            raise ExecutorError(str(exc), retryable=False, error_type="invalid_path") from exc
        cost = None
        if tokens is not None and c.price_per_1k_tokens is not None:
            cost = tokens * c.price_per_1k_tokens / 1000.0
        return ExecutionResult(content=content, tokens=tokens, cost=cost,
                               log=f"model={c.model} finish={finish} tokens={tokens}")

    async def _post(self, body: dict[str, Any]) -> tuple[int, Mapping[str, str], bytes]:
        c = self.config
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if c.api_key is not None:
            headers["Authorization"] = f"Bearer {c.api_key.get_secret_value()}"
        import aiohttp  # here, not at import: workers that never call an LLM start faster

        timeout = aiohttp.ClientTimeout(total=c.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                c.url, json=body, headers=headers, allow_redirects=False,  # keep the key here
            ) as resp:
                raw = await _read_limited(resp.content, c.max_response_bytes)
                return resp.status, resp.headers.copy(), raw
        except TimeoutError as exc:
            raise ExecutorError(f"no reply from {c.url} within {c.timeout_s:g}s",
                                retryable=True, error_type="timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ExecutorError(f"cannot reach {c.url}: {type(exc).__name__}: {exc}",
                                retryable=True, error_type="connection") from exc

    def _status_error(self, status: int, headers: Mapping[str, str], raw: bytes) -> ExecutorError:
        detail = self._redact(_error_detail(raw))
        message = f"HTTP {status} from {self.config.url}" + (f": {detail}" if detail else "")
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if status == 429:
            return ExecutorError(message, retryable=True, error_type="rate_limited",
                                 output=detail, retry_after=retry_after)
        if status == 408 or status >= 500:
            kind = "timeout" if status == 408 else "server_error"
            return ExecutorError(message, retryable=True, error_type=kind, output=detail,
                                 retry_after=retry_after)
        kind = "auth" if status in (401, 403) else "bad_request"
        return ExecutorError(message, retryable=False, error_type=kind, output=detail)

    def _parse(self, raw: bytes) -> tuple[str, str | None, int | None]:
        """(reply text, finish_reason, total tokens) from a chat-completions response."""
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ExecutorError("malformed chat-completions response", retryable=True,
                                error_type="bad_response",
                                output=self._redact(raw[:_ERROR_TEXT_CHARS].decode(
                                    "utf-8", errors="replace"))) from exc
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise ExecutorError("the reply has no text content", retryable=True,
                                error_type="empty_reply")
        return content, choice.get("finish_reason"), _total_tokens(data.get("usage"))

    def _redact(self, text: str) -> str:
        key = self.config.api_key.get_secret_value() if self.config.api_key else ""
        return text.replace(key, "***") if key else text


async def _read_limited(stream: aiohttp.StreamReader, limit: int) -> bytes:
    buf = bytearray()
    while chunk := await stream.read(65536):
        buf += chunk
        if len(buf) > limit:
            raise ExecutorError(f"response larger than {limit} bytes", retryable=False,
                                error_type="bad_response")
    return bytes(buf)


def _total_tokens(usage: Any) -> int | None:
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    counted = [p for p in parts if isinstance(p, int)]
    return sum(counted) if counted else None


def _error_detail(raw: bytes) -> str:
    """The server's error message (OpenAI's `{"error": {"message": ...}}`, or the body)."""
    text = raw[: 4 * _ERROR_TEXT_CHARS].decode("utf-8", errors="replace")
    try:
        error = json.loads(raw).get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text = error["message"]
        elif isinstance(error, str):
            text = error
    except (ValueError, AttributeError):
        pass
    return " ".join(text.split())[:_ERROR_TEXT_CHARS]
