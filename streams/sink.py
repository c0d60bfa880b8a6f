"""The file sink: materialise finished files into the workspace, as a stage of its own.

It reads `devline.events` with its own consumer group and offsets (like a Kafka Connect
sink) and writes each `TaskCompleted` file under `<workspace>/<project>/<path>`, taking the
content from the event or, by hash, from the artifact store. Writing is idempotent (a file
that already has the content's hash is left alone; others are replaced atomically), so a
crash anywhere followed by redelivery gives the same files. Offsets are committed only
after the files of a batch are written; blocking file I/O runs in a thread.

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
        project = ev.get("project")
        if not project:
            log.warning("%s/%s: TaskCompleted without a project (written before the sink "
                        "existed); not materialised", ev["plan_id"], ev["path"])
            return None
        # One thread hop for a file whose content is in the event (most are): the path
        # resolved (WorkspaceError: it escapes), the file left alone or written.
        target, wrote = await asyncio.to_thread(self._place, project, ev)
        if wrote is None:  # not there, and the event does not carry it: from the store
            data = await self.stored_content(ev)
            if data is None:
                raise MissingArtifact(f"artifact {ev['content_hash'][:12]} of {project}/"
                                      f"{ev['path']} is not in the artifact store")
            await asyncio.to_thread(write_atomically, target, data)
            wrote = True
        if wrote:
            self.written += 1
        else:
            self.unchanged += 1
        return target

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
        if rec.header("event-type") != "TaskCompleted":
            return  # cheap: most events are not completions
        try:
            event_type, ev = self.codec.decode(rec.value or b"")
        except DecodeError:
            return  # the stream processor dead-letters it; nothing to write
        if event_type != "TaskCompleted":
            return
        pause = 0.2
        while True:
            try:
                path = await self.files.materialize(ev)
                if path is not None:
                    log.debug("wrote %s", path)
                return
            except (WorkspaceError, MissingArtifact) as exc:
                log.error("%s/%s not written: %s", ev["plan_id"], ev["path"], exc)
                return
            except (OSError, ArtifactError) as exc:  # the disk or the store: ours, retried
                log.warning("writing %s/%s failed (%s); retrying in %.1fs", ev["plan_id"],
                            ev["path"], exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        s = self.settings
        consumer = AIOKafkaConsumer(
            s.topic(T.EVENTS), bootstrap_servers=s.bootstrap, group_id=s.group("devline-sink"),
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=s.max_message_bytes, fetch_max_wait_ms=200,
            metadata_max_age_ms=5000, **s.kafka_common())
        await consumer.start()
        log.info("file sink writing %s", s.workspace.resolve())
        try:
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                if not batch:
                    continue
                for tp, records in batch.items():
                    for record in records:
                        await self.handle(RawRecord.of(record))
                    with contextlib.suppress(Exception):  # redelivery redoes them: idempotent
                        await consumer.commit({tp: records[-1].offset + 1})
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
