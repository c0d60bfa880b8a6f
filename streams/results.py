"""A worker's results: the events that report an executor run, sent until the broker has
them. An executor run (minutes, tokens) is never thrown away for a broker hiccup, and the
event id stays the same across tries, so a resend is recognisably the same result."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from agents.executors.fingerprint import error_fingerprint
from agents.types import ExecutionResult, WorkItem
from devline.errors import ExecutorError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.artifacts import ArtifactStore
from streams.checking import interface_hash
from streams.claims import completed_content
from streams.emit import headers_for, new_id, now_ms
from streams.outbox import Outbox
from streams.retrying import until_done

T_ = TypeVar("T_")
log = logging.getLogger("devline.worker")



class Results:
    def __init__(self, settings: Settings, codec: Codec, worker_id: str, store: ArtifactStore,
                 outbox: Outbox | None = None) -> None:
        self.settings = settings
        self.store = store
        self.codec = codec
        self.worker_id = worker_id
        self.outbox = outbox
        self.producer: AIOKafkaProducer | None = None

    async def resend_pending(self) -> list[str]:
        """Send what a previous incarnation of this slot finished but did not report;
        returns their dispatch ids."""
        if self.outbox is None:
            return []
        sent = []
        for event_type, record in await asyncio.to_thread(self.outbox.pending):
            log.info("reporting %s of %s/%s that the previous worker in this slot finished",
                     event_type, record["plan_id"], record["task_id"])
            await self._send(event_type, record)
            await asyncio.to_thread(self.outbox.remove, record["dispatch_id"])
            sent.append(record["dispatch_id"])
        return sent

    async def completed(self, item: WorkItem, started: int, result: ExecutionResult,
                        qa: dict[str, Any] | None = None) -> None:
        content, digest, size = await self._stored(item, result)
        await self._report("TaskCompleted", {
            **self._common(item, started), "cache_key": item.cache_key,
            "content": content, "content_hash": digest, "size": size, "cached": False,
            "tokens": result.tokens, "cost": result.cost, "project": item.project, "qa": qa,
            "interface_hash": interface_hash(item.path, result.content)})

    async def failed(self, item: WorkItem, started: int, exc: ExecutorError) -> None:
        await self._report("TaskFailed", {
            **self._common(item, started), "error": str(exc), "error_type": exc.error_type,
            "retryable": exc.retryable,
            "fingerprint": error_fingerprint(exc.error_type, str(exc)),
            "output": exc.output, "retry_after_s": exc.retry_after})

    async def qa_failed(self, item: WorkItem, started: int, result: ExecutionResult,
                        exc: ExecutorError, qa: dict[str, Any]) -> None:
        """A version that failed its checks: stored (its fix starts from it) and reported
        with the verdict; the fingerprint is the verdict's (line-number agnostic)."""
        _, digest, size = await self._stored(item, result)
        await self._report("TaskFailed", {
            **self._common(item, started), "error": str(exc), "error_type": exc.error_type,
            "retryable": exc.retryable, "fingerprint": qa["fingerprint"],
            "output": exc.output, "retry_after_s": None, "content_hash": digest,
            "size": size, "qa": qa, "interface_hash": interface_hash(item.path, result.content)})

    async def metrics(self, points: list[tuple[str, float, dict[str, str]]]) -> None:
        """Metric points, sent without waiting: a lost point costs a sample, not a task."""
        if self.producer is None:
            return
        for name, value, labels in points:
            record = {"source": "worker", "name": name, "value": float(value),
                      "labels": labels, "at": now_ms()}
            try:
                await self.producer.send(self.settings.topic(T.METRICS), key=b"worker",
                                         value=self.codec.encode("MetricPoint", record),
                                         headers=[("event-type", b"MetricPoint")])
            except Exception as exc:
                log.debug("metric %s not sent: %s", name, exc)

    async def _stored(self, item: WorkItem, result: ExecutionResult
                      ) -> tuple[str | None, str, int]:
        return await self._retried(f"storing the output of {item.plan_id}/{item.task_id}",
                                   partial(completed_content, result.content, self.store))

    def _common(self, item: WorkItem, started: int) -> dict[str, Any]:
        return {"event_id": new_id(), "plan_id": item.plan_id, "task_id": item.task_id,
                "path": item.path, "attempt": item.attempt, "worker_id": self.worker_id,
                "dispatch_id": item.dispatch_id, "executor": item.executor,
                "started_at": started, "finished_at": now_ms()}

    async def _report(self, event_type: str, record: dict[str, Any]) -> None:
        if self.outbox is not None:
            await self.outbox.keep(event_type, record)
        await self._send(event_type, record)
        if self.outbox is not None:
            self.outbox.remove(record["dispatch_id"])  # an unlink

    async def _send(self, event_type: str, record: dict[str, Any]) -> None:
        assert self.producer is not None
        producer, value = self.producer, self.codec.encode(event_type, record)
        await self._retried(
            f"reporting {event_type} of {record['plan_id']}/{record['task_id']}",
            partial(producer.send_and_wait, self.settings.topic(T.EVENTS),
                    key=record["plan_id"].encode(), value=value,
                    headers=headers_for(event_type, record)))

    @staticmethod
    async def _retried(what: str, step: Callable[[], Awaitable[T_]]) -> T_:
        """Our own failure (the broker or the store away) is retried until it passes."""
        return await until_done(what, step, log)
