"""A worker's result outbox: a finished run's result is written to disk before it is sent
and removed once the broker has it. A worker killed in between is restarted in the same
slot (static group membership); it sends what its outbox holds before it takes new work,
and recognises the redelivered item as one it already finished, instead of running the
executor again.

The entry is not fsynced: what it guards against is the process dying, and a file written
before that is in the kernel's page cache for the next incarnation to read. Surviving the
machine is the log's job, and a single broker does not fsync its log either (replicas do
that); an fsync per task cost the worker more than running a zero-duration task."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from streams.artifacts import INLINE_IO_BYTES

log = logging.getLogger("devline.worker")


class Outbox:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, dispatch_id: str) -> Path:
        safe = "".join(c for c in dispatch_id if c.isalnum() or c in "-_") or "unnamed"
        return self.root / f"{safe}.json"

    async def keep(self, event_type: str, record: dict[str, Any]) -> None:
        """Keep a result until its send is known: a small entry (most: content inline up
        to 4 KB) is written in the loop, quicker than a thread hop; a big one (a long QA
        report) in a thread, like the artifact store's files."""
        data = self._entry(event_type, record)
        if len(data) <= INLINE_IO_BYTES:
            self._write(record["dispatch_id"], data)
        else:
            await asyncio.to_thread(self._write, record["dispatch_id"], data)

    @staticmethod
    def _entry(event_type: str, record: dict[str, Any]) -> bytes:
        return json.dumps({"type": event_type, "record": record}).encode("utf-8")

    def _write(self, dispatch_id: str, data: bytes) -> None:
        target = self._path(dispatch_id)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def remove(self, dispatch_id: str) -> None:
        self._path(dispatch_id).unlink(missing_ok=True)

    def pending(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for path in sorted(self.root.glob("*.json")):
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
                out.append((str(entry["type"]), dict(entry["record"])))
            except (OSError, ValueError, KeyError) as exc:  # torn by a crash mid-write
                log.warning("outbox entry %s unreadable (%s); dropped", path.name, exc)
                path.unlink(missing_ok=True)
        return out
