"""A fake OpenAI-compatible chat-completions server on a real local socket, for tests.

It serves `POST /v1/chat/completions` on 127.0.0.1 (an ephemeral port) from a thread, answers
from a script of `Reply`s (then a default reply), and records every request it receives.

    with FakeLLM() as llm:
        llm.script(Reply.rate_limited(retry_after="3"), Reply.ok("```python\\nx = 1\\n```"))
        ... HttpExecutor(HttpConfig(base_url=llm.base_url, model="m")) ...
        assert llm.requests[0].headers["Authorization"] == "Bearer k"
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}


@dataclass
class Reply:
    """One scripted answer. `body` (raw bytes) overrides the generated completion JSON."""

    status: int = 200
    content: str = "```python\nprint('hello')\n```"
    usage: dict[str, int] | None = field(default_factory=lambda: dict(DEFAULT_USAGE))
    finish_reason: str = "stop"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes | None = None

    @classmethod
    def ok(cls, content: str, **kw: Any) -> Reply:
        return cls(content=content, **kw)

    @classmethod
    def error(cls, status: int, message: str = "error", **kw: Any) -> Reply:
        body = json.dumps({"error": {"message": message, "type": "fake"}}).encode()
        return cls(status=status, body=body, **kw)

    @classmethod
    def rate_limited(cls, retry_after: str | None = "2") -> Reply:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls.error(429, "rate limit reached", headers=headers)

    @classmethod
    def slow(cls, delay_s: float, content: str = "```\nlate\n```") -> Reply:
        return cls(content=content, delay_s=delay_s)

    def encode(self, model: str) -> bytes:
        if self.body is not None:
            return self.body
        completion: dict[str, Any] = {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": self.finish_reason,
                         "message": {"role": "assistant", "content": self.content}}],
        }
        if self.usage is not None:
            completion["usage"] = self.usage
        return json.dumps(completion).encode()


@dataclass(frozen=True)
class Request:
    """What the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def prompt(self) -> str:
        """All message contents, joined (system first)."""
        return "\n".join(str(m.get("content", "")) for m in self.body.get("messages", []))


class FakeLLM:
    """The server. Use as a context manager, or call `start()` / `stop()`."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply()
        self.requests: list[Request] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> FakeLLM:
        """Answer the next requests with `replies`, in order, then with the default."""
        with self._lock:
            self._script.extend(replies)
        return self

    def rate_limit_first(self, n: int, retry_after: str | None = "2") -> FakeLLM:
        return self.script(*(Reply.rate_limited(retry_after) for _ in range(n)))

    def start(self) -> FakeLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # cut scripted delays short
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _next(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self._script.popleft() if self._script else self.default

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", errors="replace")}
                request = Request("POST", self.path, dict(self.headers.items()), body)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(Reply.error(404, f"no route {self.path}"), "")
                    return
                reply = fake._next(request)
                if reply.delay_s and fake._stopping.wait(reply.delay_s):
                    return
                self._send(reply, str(body.get("model", "")))

            def _send(self, reply: Reply, model: str) -> None:
                payload = reply.encode(model)
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
