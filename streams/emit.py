"""Encode events and put them on topics with readable string keys and headers."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T

if TYPE_CHECKING:
    from streams.artifacts import ArtifactStore

Send = Callable[..., Awaitable[Any]]

# Dead letters by reference. A dead-lettered value larger than VALUE_INLINE_MAX goes to the
# artifact store whole; the DLQ gets its first VALUE_HEAD bytes and its hash. 256 KiB keeps
# every dead letter (value, key, headers: under 300 KiB) far below the 8 MiB the topics
# allow, so no original plus headers can exceed it, and below the 1 MiB that Kafka tools
# fetch and accept by default; it is far above what devline itself dead-letters (a
# TaskFailed is typically a few KB). 64 KiB of head is plenty to recognise a record (`dlq
# show` dumps 1 KiB) and keeps 30 days of big garbage from filling the DLQ. Keys alike.
VALUE_INLINE_MAX = 256 * 1024
VALUE_HEAD = 64 * 1024
KEY_INLINE_MAX = 16 * 1024
KEY_HEAD = 1024
REF_SCHEME = "sha256:"


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


def ref_headers(part: str) -> tuple[str, str, str]:
    """Names of the headers saying a dead letter's `part` ("value" or "key") is by reference."""
    return f"dlq-{part}-ref", f"dlq-{part}-size", f"dlq-{part}-truncated"


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as it is sent, and the originals to store (first) that it refers to."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    originals: tuple[bytes, ...] = ()


def _spill(part: str, data: bytes | None, inline_max: int, head: int
           ) -> tuple[bytes | None, list[tuple[str, bytes]], tuple[bytes, ...]]:
    if data is None or len(data) <= inline_max:
        return data, [], ()
    ref, size, truncated = ref_headers(part)
    digest = hashlib.sha256(data).hexdigest()
    return data[:head], [(ref, f"{REF_SCHEME}{digest}".encode()),
                         (size, str(len(data)).encode()), (truncated, b"true")], (data,)


def by_reference(value: bytes | None, key: bytes | None,
                 headers: list[tuple[str, bytes]]) -> DeadLetter:
    """The dead letter to send for a record: small values and keys inline, as they are;
    larger ones truncated to their head, with `dlq-<part>-ref: sha256:<hex>`,
    `dlq-<part>-size` (the original length) and `dlq-<part>-truncated: true` headers."""
    v, v_headers, v_orig = _spill("value", value, VALUE_INLINE_MAX, VALUE_HEAD)
    k, k_headers, k_orig = _spill("key", key, KEY_INLINE_MAX, KEY_HEAD)
    return DeadLetter(k, v, [*headers, *v_headers, *k_headers], v_orig + k_orig)


async def stored_by_reference(store: ArtifactStore, value: bytes | None, key: bytes | None,
                              headers: list[tuple[str, bytes]]) -> DeadLetter:
    """`by_reference`, with the originals it refers to already in the store: the letter is
    ready to send (store first, so a crash in between only stores again)."""
    letter = by_reference(value, key, headers)
    for original in letter.originals:
        await store.put(original)
    return letter


class Emitter:
    """Encodes records with the codec and sends them through a `send(topic, ...)` function."""

    def __init__(self, settings: Settings, codec: Codec, send: Send,
                 urge: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.codec = codec
        self._send = send
        self._urge = urge

    def urge(self) -> None:
        """Send what is queued now, without waiting out the producer's linger: for records
        something waits on (a dispatch decision), where the linger is pure latency."""
        if self._urge is not None:
            self._urge()

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
        """Queue a dead letter as given; returns its delivery future (if any). Callers go
        through `Ports.publish_dead_letter`, which stores big originals and sends a
        reference (`by_reference`)."""
        return await self._send(self.settings.topic(T.DLQ), key=key, value=value,
                                partition=None, headers=headers)

    async def tombstone(self, topic: str, key: str) -> Any:
        """Queue a delete marker for `key` on a compacted topic; returns its delivery."""
        return await self._send(self.settings.topic(topic), key=key.encode(), value=None,
                                partition=None, headers=[])

    async def metric(self, source: str, name: str, value: float, **labels: str) -> Any:
        return await self.event("MetricPoint", {"source": source, "name": name,
                                                "value": float(value), "labels": labels,
                                                "at": now_ms()}, topic=T.METRICS, key=source)
