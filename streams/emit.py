"""Encode events and put them on topics with readable string keys and headers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T

Send = Callable[..., Awaitable[Any]]


def detach(delivery: Any) -> None:
    """Fire and forget (metrics, probes): a failed delivery must not be logged as an
    exception nobody retrieved."""
    if isinstance(delivery, asyncio.Future):
        delivery.add_done_callback(lambda f: f.cancelled() or f.exception())


def new_id() -> str:
    return uuid.uuid4().hex


def now_ms() -> int:
    return int(time.time() * 1000)


def headers_for(event_type: str, record: dict[str, Any]) -> list[tuple[str, bytes]]:
    """`event-type`, `plan-id`, `task-id`, `attempt` and a trace id, as plain strings."""
    out = [("event-type", event_type.encode())]
    for field, name in (("plan_id", "plan-id"), ("task_id", "task-id"), ("attempt", "attempt")):
        if record.get(field) is not None:
            out.append((name, str(record[field]).encode()))
    if record.get("plan_id"):
        out.append(("trace-id", str(record["plan_id"]).encode()))
    return out


def dead_letter_headers(reason: str, *, topic: str, partition: int | None, offset: int | None,
                        attempt: int | None = None, fingerprint: str | None = None,
                        event_type: str | None = None) -> list[tuple[str, bytes]]:
    """Headers of a DLQ record: why it is there and where it came from."""
    hdrs = [("dlq-reason", reason[:2000].encode("utf-8", "replace")),
            ("dlq-source-topic", topic.encode()),
            ("dlq-source-partition", str(partition if partition is not None else -1).encode()),
            ("dlq-source-offset", str(offset if offset is not None else -1).encode()),
            ("dlq-at", str(now_ms()).encode())]
    if attempt is not None:
        hdrs.append(("dlq-attempt", str(attempt).encode()))
    if fingerprint:
        hdrs.append(("dlq-fingerprint", fingerprint.encode()))
    if event_type:
        hdrs.append(("event-type", event_type.encode()))
    return hdrs


class Emitter:
    """Encodes records with the codec and sends them through a `send(topic, ...)` function."""

    def __init__(self, settings: Settings, codec: Codec, send: Send) -> None:
        self.settings = settings
        self.codec = codec
        self._send = send

    async def event(self, event_type: str, record: dict[str, Any], *,
                    topic: str = T.EVENTS, key: str | None = None,
                    partition: int | None = None) -> Any:
        """Encode and queue one event; returns the send's delivery future (if any)."""
        value = self.codec.encode(event_type, record)
        k = key if key is not None else str(record.get("plan_id") or record.get("worker_id") or "")
        return await self._send(self.settings.topic(topic), key=k.encode(), value=value,
                                partition=partition, headers=headers_for(event_type, record))

    async def dead_letter(self, value: bytes | None, key: bytes | None,
                          headers: list[tuple[str, bytes]]) -> Any:
        """Queue a dead letter; returns its delivery future (if any)."""
        return await self._send(self.settings.topic(T.DLQ), key=key, value=value,
                                partition=None, headers=headers)

    async def metric(self, source: str, name: str, value: float, **labels: str) -> Any:
        return await self.event("MetricPoint", {"source": source, "name": name,
                                                "value": float(value), "labels": labels,
                                                "at": now_ms()}, topic=T.METRICS, key=source)
