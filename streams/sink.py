"""The file sink: materialise finished files into the workspace, as a stage of its own.

It reads `devline.events` with its own consumer group and offsets (like a Kafka Connect
sink) and writes each `TaskCompleted` file under `<workspace>/<project>/<path>`, taking the
content from the event or, by hash, from the artifact store. Writing is idempotent (a file
that already has the content's hash is left alone; others are replaced atomically), so a
crash anywhere followed by redelivery gives the same files. Offsets are committed only
after the files of a batch are written; blocking file I/O runs in a thread, one hop per
fetched batch. The sink is not on the pipeline's critical path (nothing waits for a file),
so it fetches in batches: up to `FETCH_WAIT_MS` for `FETCH_MIN_BYTES` to gather, which
costs it and the broker one fetch and one commit per batch instead of per completion.

The stream processor never touches the workspace, so it can run on another machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any

from devline.errors import DecodeError, WorkspaceError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.artifacts import ArtifactError, ArtifactStore
from streams.edge.ports import RawRecord
from streams.lifecycle import shut
from streams.workspace import target_path, write_atomically

log = logging.getLogger("devline.sink")

ARTIFACT_WAIT_S = 30.0  # a cached completion's artifact may still be on its way
FETCH_WAIT_MS = 200       # a file lands at most this much later than its event
FETCH_MIN_BYTES = 64 * 1024


class MissingArtifact(Exception):
    """A cached completion whose content the store does not have (it was wiped)."""


def file_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Materializer:
    """Turns one TaskCompleted into the file it reports; the part tests drive directly."""

    def __init__(self, workspace: Path, store: ArtifactStore,
                 sleep: Any = asyncio.sleep) -> None:
        self.workspace = workspace
        self.store = store
        self.sleep = sleep
        self.written = 0
        self.unchanged = 0

    @staticmethod
    def inline_content(ev: dict[str, Any]) -> bytes | None:
        """The content the event carries, if it has its hash."""
        if ev.get("content") is None:
            return None
        inline: bytes = ev["content"].encode("utf-8")
        if hashlib.sha256(inline).hexdigest() == ev["content_hash"]:
            return inline
        log.error("%s/%s: inline content does not match its hash; using the store",
                  ev["plan_id"], ev["path"])
        return None

    async def stored_content(self, ev: dict[str, Any]) -> bytes | None:
        """The content from the store by its hash (waiting a while: a cached completion's
        artifact may still be on its way)."""
        waited = 0.0
        while True:
            data: bytes | None = await self.store.get(ev["content_hash"])
            if data is not None or waited >= ARTIFACT_WAIT_S:
                return data
            await self.sleep(0.2)
            waited += 0.2

    async def materialize(self, ev: dict[str, Any]) -> Path | None:
        """Write the file of one TaskCompleted; None when there is nothing to write."""
        return (await self.materialize_many([ev]))[0]

    async def materialize_many(self, evs: list[dict[str, Any]]) -> list[Path | None]:
        """Write the files of some TaskCompleted events, in order. One thread hop for all
        whose content is in the event (most are): each path resolved (WorkspaceError: it
        escapes), each file left alone or written; the rest from the store."""
        placed = await asyncio.to_thread(self._place_all, evs)
        out: list[Path | None] = []
        for ev, (target, wrote) in zip(evs, placed, strict=True):
            if target is None:
                out.append(None)
                continue
            if wrote is None:  # not there, and the event does not carry it: from the store
                data = await self.stored_content(ev)
                if data is None:
                    raise MissingArtifact(f"artifact {ev['content_hash'][:12]} of "
                                          f"{ev['project']}/{ev['path']} is not in the "
                                          "artifact store")
                await asyncio.to_thread(write_atomically, target, data)
                wrote = True
            if wrote:
                self.written += 1
            else:
                self.unchanged += 1
            out.append(target)
        return out

    def _place_all(self, evs: list[dict[str, Any]]) -> list[tuple[Path | None, bool | None]]:
        out: list[tuple[Path | None, bool | None]] = []
        for ev in evs:
            project = ev.get("project")
            if not project:
                log.warning("%s/%s: TaskCompleted without a project (written before the "
                            "sink existed); not materialised", ev["plan_id"], ev["path"])
                out.append((None, False))
                continue
            out.append(self._place(project, ev))
        return out

    def _place(self, project: str, ev: dict[str, Any]) -> tuple[Path, bool | None]:
        """(target, whether written): False if it already has the content, None if it does
        not and the event does not carry it (hashed here, only when it is needed)."""
        target = target_path(self.workspace, project, ev["path"])
        if file_hash(target) == ev["content_hash"]:
            return target, False
        content = self.inline_content(ev)
        if content is None:
            return target, None
        write_atomically(target, content)
        return target, True


class FileSink:
    """The sink process: consume, materialise, commit; our failures are retried."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.codec = Codec.from_settings(settings)
        self.files = Materializer(settings.workspace, store)
        self.stopping = asyncio.Event()

    async def handle(self, rec: RawRecord) -> None:
        await self.handle_many([rec])

    async def handle_many(self, recs: list[RawRecord]) -> None:
        """The completions among `recs` written, in order: all of them at once, and one
        at a time when that fails, so one bad path or missing artifact is only its own
        error line. Our own failures (the disk, the store) are retried."""
        evs = []
        for rec in recs:
            if rec.header("event-type") != "TaskCompleted":
                continue  # cheap: most events are not completions
            try:
                event_type, ev = self.codec.decode(rec.value or b"")
            except DecodeError:
                continue  # the stream processor dead-letters it; nothing to write
            if event_type == "TaskCompleted":
                evs.append(ev)
        if not evs:
            return
        try:
            await self._written(evs)
        except (WorkspaceError, MissingArtifact):
            for ev in evs:
                try:
                    await self._written([ev])
                except (WorkspaceError, MissingArtifact) as exc:
                    log.error("%s/%s not written: %s", ev["plan_id"], ev["path"], exc)

    async def _written(self, evs: list[dict[str, Any]]) -> None:
        pause = 0.2
        while True:
            try:
                for path in await self.files.materialize_many(evs):
                    if path is not None:
                        log.debug("wrote %s", path)
                return
            except (OSError, ArtifactError) as exc:  # the disk or the store: ours, retried
                log.warning("writing %d file(s) failed (%s); retrying in %.1fs", len(evs),
                            exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        s = self.settings
        consumer = AIOKafkaConsumer(
            s.topic(T.EVENTS), bootstrap_servers=s.bootstrap, group_id=s.group("devline-sink"),
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=s.max_message_bytes, fetch_max_wait_ms=FETCH_WAIT_MS,
            fetch_min_bytes=FETCH_MIN_BYTES, metadata_max_age_ms=5000, **s.kafka_common())
        await consumer.start()
        log.info("file sink writing %s", s.workspace.resolve())
        try:
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                if not batch:
                    continue
                await self.handle_many([RawRecord.of(r) for rs in batch.values() for r in rs])
                with contextlib.suppress(Exception):  # redelivery redoes them: idempotent
                    await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
        finally:
            await shut(consumer)
            log.info("file sink stopped: %d files written, %d already up to date",
                     self.files.written, self.files.unchanged)


async def run_sink(settings: Settings) -> None:
    import signal

    sink = FileSink(settings, settings.artifact_store())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sink.stopping.set)
    await sink.run()
