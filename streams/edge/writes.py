"""Artifact-store writes of one batch of events, run behind the fold.

Storing a finished task's content and its cache ref is a thread hop each (or an S3 request):
awaited one after the other they cost the processor more than folding the events. In a
batch they start at once, run while the rest of the batch is folded, and are awaited with
the batch's sends, before its offsets are committed: a crash before that redoes them (they
are idempotent, by hash). A lookup in the same batch waits for a write of the digest it
needs, so a cache entry never reads as missing because its content is still on the way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any


class WriteBehind:
    def __init__(self) -> None:
        # This batch's writes, in the handling task's context only: a timer or a recovery
        # running meanwhile in another task awaits its own writes.
        self._batch: ContextVar[list[asyncio.Future[Any]] | None] = ContextVar(
            "write_behind", default=None)
        self._by_digest: dict[str, asyncio.Future[Any]] = {}

    async def write(self, op: Awaitable[Any], digest: str | None = None) -> None:
        """Start `op`; outside a batch (recovery, timers) it is awaited at once."""
        batch = self._batch.get()
        if batch is None:
            await op
            return
        task = asyncio.ensure_future(op)
        batch.append(task)
        if digest:
            self._by_digest[digest] = task

    async def written(self, digest: str) -> None:
        """Wait for a write of `digest` started in the current batch, if any (its failure
        is the batch's, raised by `finish`)."""
        task = self._by_digest.get(digest)
        if task is not None:
            await asyncio.wait([task])

    async def run(self, op: Callable[[], Awaitable[None]]) -> None:
        """Run `op` (a batch's fold and effects) with its writes behind it; return once
        every write is done, raise the first failure (the batch is redone)."""
        tasks: list[asyncio.Future[Any]] = []
        token = self._batch.set(tasks)
        try:
            await op()
        finally:
            self._batch.reset(token)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            done = set(tasks)
            for digest in [d for d, t in self._by_digest.items() if t in done]:
                del self._by_digest[digest]
        for result in results:
            if isinstance(result, BaseException):
                raise result
