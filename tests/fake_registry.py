"""A schema registry over a real socket: the part of Confluent's REST API devline's codec
uses (register a subject's schema, fetch a schema by id), with basic auth when asked.

Outside our control in production (Confluent, Karapace, Apicurio), so tests may fake it,
as long as it speaks the protocol: JSON bodies with the registry's media type.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MEDIA = "application/vnd.schemaregistry.v1+json"


class Registry:
    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.auth = auth
        self.ids: dict[str, int] = {}       # schema text -> id
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, body: bytes, authorization: str | None
               ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append((method, path))
        if self.auth is not None:
            want = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
            if authorization != want:
                return 401, {"error_code": 401, "message": "Unauthorized"}
        parts = path.split("?", 1)[0].strip("/").split("/")
        if method == "POST" and len(parts) == 3 and parts[0] == "subjects" \
                and parts[2] == "versions":
            schema = json.loads(body)["schema"]
            with self.lock:
                schema_id = self.ids.setdefault(schema, len(self.ids) + 1)
                versions = self.subjects.setdefault(parts[1], [])
                if schema_id not in versions:
                    versions.append(schema_id)
            return 200, {"id": schema_id}
        if method == "GET" and len(parts) == 3 and parts[:2] == ["schemas", "ids"]:
            wanted = int(parts[2])
            for schema, schema_id in self.ids.items():
                if schema_id == wanted:
                    return 200, {"schema": schema, "schemaType": "AVRO"}
            return 404, {"error_code": 40403, "message": "Schema not found"}
        return 404, {"error_code": 404, "message": f"not served here: {method} {path}"}


@contextmanager
def serving(auth: tuple[str, str] | None = None) -> Iterator[tuple[str, Registry]]:
    """A registry on 127.0.0.1 (a free port) for the block; yields its URL and state."""
    registry = Registry(auth)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            status, body = registry.handle(method, self.path, self.rfile.read(size),
                                           self.headers.get("Authorization"))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", MEDIA)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", registry
    finally:
        server.shutdown()
        server.server_close()
