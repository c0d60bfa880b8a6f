"""Dead letters: read devline.dlq, decide what a redrive means for each letter, do it.

A dead task's letter (headers `plan-id`/`task-id`, value = its last TaskFailed) is redriven
by a `TaskRedriveRequested`: the stream processor checks it against the plan's state and, if
the task is still dead at that attempt, decides a `TaskRetryScheduled` whose reason starts
with "redrive"; the fold revives the task with a fresh attempt budget and a clean
no-progress history. A poison record (bytes that did
not decode where they were read) is put back on its source topic as it was: when the letter
carries only the head of a big value (or key) by reference, the full bytes come from the
artifact store and must match their hash; without them the redrive is refused, and the
truncated copy is never republished.

Each letter is redriven at most once. Task redrives are found again in devline.events by
their reason; poison redrives by an `OpsDecision` (action "redrive") on devline.ops, since a
republished record carries no plan to log it under. devline.dlq has one partition, so an
offset names a letter.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.scheduling import fold as F
from devline.errors import DecodeError, DevlineError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.artifacts import (
    ArtifactError,
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    sha256,
)
from streams.client import produce, records
from streams.emit import REF_SCHEME, new_id, now_ms, ref_headers

IDLE_S = 1.0  # a topic scan ends after this long with nothing new
REDRIVE_OF = "redrive-of"  # header on a republished poison record: where it came back from
_MARK = re.compile(r"^redrive: from DLQ offset (\d+)\b")


class OriginalMissing(DevlineError):
    """A letter holds only the head of a record and the artifact store lacks the full bytes
    (or holds other bytes under the hash): the record cannot be put back as it was."""


def redrive_reason(offset: int) -> str:
    """The reason of a redrive; it starts with the fold's REDRIVE prefix and names the letter."""
    return f"{F.REDRIVE}: from DLQ offset {offset} by devline dlq"


# -- the letters -------------------------------------------------------------------------
@dataclass(frozen=True)
class Letter:
    """One dead letter as read from devline.dlq."""

    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, record: Any) -> Letter:
        return cls(record.partition, record.offset, record.timestamp, record.key, record.value,
                   tuple(record.headers or ()))

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return None

    def _int(self, name: str) -> int | None:
        raw = self.header(name)
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    @property
    def plan_id(self) -> str | None:
        return self.header("plan-id")

    @property
    def task_id(self) -> str | None:
        return self.header("task-id")

    @property
    def is_task(self) -> bool:
        return bool(self.plan_id and self.task_id)

    @property
    def attempt(self) -> int | None:
        return self._int("dlq-attempt")

    @property
    def at(self) -> int:
        return self._int("dlq-at") or self.timestamp

    def ref(self, part: str = "value") -> str | None:
        """The sha256 (hex) of the full `part` ("value" or "key") when the letter carries
        only its head by reference, else None."""
        raw = self.header(ref_headers(part)[0])
        return raw[len(REF_SCHEME):] if raw and raw.startswith(REF_SCHEME) else None

    def size(self, part: str = "value") -> int | None:
        """The original length of `part`: from the headers when by reference, else inline."""
        if self.ref(part) is not None:
            return self._int(ref_headers(part)[1])
        data = self.value if part == "value" else self.key
        return len(data) if data is not None else None

    @property
    def truncated(self) -> bool:
        return self.ref("value") is not None or self.ref("key") is not None

    @property
    def source(self) -> tuple[str | None, int | None, int | None]:
        return (self.header("dlq-source-topic"), self._int("dlq-source-partition"),
                self._int("dlq-source-offset"))

    def row(self, now: int, redriven: str | None) -> dict[str, Any]:
        """The JSON-able summary `list` prints."""
        topic, part, off = self.source
        return {"partition": self.partition, "offset": self.offset, "at": self.at,
                "age_s": max(now - self.at, 0) / 1000,
                "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
                "source_topic": topic, "source_partition": part, "source_offset": off,
                "plan_id": self.plan_id, "task_id": self.task_id, "attempt": self.attempt,
                "fingerprint": self.header("dlq-fingerprint"),
                "event_type": self.header("event-type"), "reason": self.header("dlq-reason"),
                "value_size": self.size("value"), "value_ref": self.ref("value"),
                "key_ref": self.ref("key"), "redriven": redriven}


async def original(letter: Letter, part: str, store: ArtifactStore) -> bytes | None:
    """The full `part` ("value" or "key") of the record a letter stands for: inline, or from
    the store by its reference, checked against hash and size. Raises `OriginalMissing`."""
    inline = letter.value if part == "value" else letter.key
    digest = letter.ref(part)
    if digest is None:
        return inline
    size = letter.size(part)
    where = (f"letter at offset {letter.offset} holds the first {len(inline or b'')} of "
             f"{size if size is not None else '?'} bytes of its {part}; the full {part} "
             f"{REF_SCHEME}{digest}")
    try:
        data = await store.get(digest)
    except ArtifactError as exc:
        raise OriginalMissing(f"{where} cannot be read from the artifact store: {exc}") \
            from exc
    if data is None:
        raise OriginalMissing(f"{where} is not in the artifact store{_store_name(store)}")
    if sha256(data) != digest or (size is not None and len(data) != size):
        raise OriginalMissing(f"{where} does not match what the artifact store holds "
                              f"({len(data)} bytes, {REF_SCHEME}{sha256(data)})")
    return data


def _store_name(store: ArtifactStore) -> str:
    if isinstance(store, LocalArtifactStore):
        return f" at {store.root} (DEVLINE_ARTIFACT_DIR)"
    if isinstance(store, S3ArtifactStore):
        return f", the {store.location.where} (DEVLINE_ARTIFACT_URL)"
    return ""


async def originals(letter: Letter, store: ArtifactStore) -> tuple[bytes | None, bytes | None]:
    """The full key and value of the record a letter stands for (see `original`)."""
    return await original(letter, "key", store), await original(letter, "value", store)


def find(letters: Sequence[Letter], offset: int) -> Letter | None:
    hits = [x for x in letters if x.offset == offset]
    if len(hits) > 1:
        raise DevlineError(f"offset {offset} is in several partitions of {T.DLQ}: "
                           f"{sorted(x.partition for x in hits)}")
    return hits[0] if hits else None


# -- redrive decisions (pure) ------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """What to do with one letter: `task` (send `event`), `republish`, or `skip` (why)."""

    letter: Letter
    action: str
    detail: str
    event: dict[str, Any] = field(default_factory=dict)


def decide(letter: Letter, marks: dict[int, str], states: dict[str, F.PlanState],
           now: int) -> Decision:
    """Decide one letter's redrive from what the logs say; sends nothing."""
    if letter.offset in marks:
        return Decision(letter, "skip", f"already redriven ({marks[letter.offset]})")
    if not letter.is_task:
        topic, _, _ = letter.source
        if not topic:
            return Decision(letter, "skip", "no dlq-source-topic header: nowhere to send it")
        return Decision(letter, "republish", f"republish to {topic}")
    plan_id, task_id = str(letter.plan_id), str(letter.task_id)
    state = states.get(plan_id)
    task = state.tasks.get(task_id) if state else None
    if task is None:
        return Decision(letter, "skip", f"no task {plan_id}/{task_id} in the event log")
    if task["status"] != F.DEAD:
        return Decision(letter, "skip", f"task {task_id} is {task['status']}, not dead")
    if letter.attempt is not None and letter.attempt != task["attempt"]:
        return Decision(letter, "skip", f"stale letter (attempt {letter.attempt}): task "
                        f"{task_id} died again at attempt {task['attempt']}; redrive that letter")
    # A request: the stream processor checks it against the plan's state and decides.
    event = {"event_id": new_id(), "plan_id": plan_id, "task_id": task_id,
             "attempt": int(task["attempt"]), "dlq_partition": letter.partition,
             "dlq_offset": letter.offset, "requested_by": requester(), "at": now}
    return Decision(letter, "task", f"revive task {plan_id}/{task_id} as attempt "
                    f"{int(task['attempt']) + 1}", event)


def requester() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no user name in a container: the host still says who
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def decide_all(letters: Iterable[Letter], marks: dict[int, str],
               states: dict[str, F.PlanState], now: int) -> list[Decision]:
    """Decide in order, folding each redrive locally so a batch never revives a task twice."""
    marks = dict(marks)
    decisions = []
    for letter in letters:
        d = decide(letter, marks, states, now)
        if d.action == "task":  # as the processor will decide it, so the batch sees it
            F.apply(states[d.event["plan_id"]], "TaskRetryScheduled", {
                "event_id": d.event["event_id"], "plan_id": d.event["plan_id"],
                "task_id": d.event["task_id"], "path": "", "delay_ms": 0, "due_at": now,
                "attempt": d.event["attempt"] + 1, "reason": redrive_reason(letter.offset)})
        if d.action != "skip":
            marks[letter.offset] = "in this run"
        decisions.append(d)
    return decisions


# -- reading the topics ------------------------------------------------------------------
async def load_letters(settings: Settings) -> list[Letter]:
    got = [Letter.of(r) async for r in records(settings, T.DLQ, idle_timeout=IDLE_S)]
    return sorted(got, key=lambda x: (x.partition, x.offset))


def _event_type(record: Any) -> bytes | None:
    return next((v for k, v in record.headers or () if k == "event-type"), None)


async def redrive_marks(settings: Settings, codec: Codec) -> dict[int, str]:
    """DLQ offsets already redriven: {offset: what was done}, from devline.events and .ops."""
    marks: dict[int, str] = {}

    async def scan(topic: str, event_type: str) -> list[dict[str, Any]]:
        found = []
        async for r in records(settings, topic, idle_timeout=IDLE_S):
            if _event_type(r) != event_type.encode():
                continue  # cheap: most events are not redrives
            try:
                found.append(codec.decode(r.value or b"")[1])
            except DecodeError:
                continue
        return found

    retries, requests, decisions = await asyncio.gather(
        scan(T.EVENTS, "TaskRetryScheduled"), scan(T.EVENTS, "TaskRedriveRequested"),
        scan(T.OPS, "OpsDecision"))
    for ev in retries:
        if m := _MARK.match(ev["reason"]):
            marks.setdefault(int(m.group(1)),
                             f"revived task {ev['task_id']} as attempt {ev['attempt']}")
    for ev in requests:
        if ev.get("dlq_offset") is not None:
            marks.setdefault(int(ev["dlq_offset"]),
                             f"redrive of task {ev['task_id']} requested by "
                             f"{ev['requested_by'] or 'someone'}")
    for d in decisions:
        params = d.get("params") or {}
        if d["action"] == "redrive" and params.get("dlq_offset", "").isdigit():
            marks.setdefault(int(params["dlq_offset"]),
                             f"republished to {params.get('topic')}[{params.get('partition')}]"
                             f"@{params.get('offset')}")
    return marks


# -- sending -----------------------------------------------------------------------------
async def _republish(settings: Settings, letter: Letter, store: ArtifactStore
                     ) -> tuple[int, int]:
    """Put a poison record back on its source topic and partition, as it was (its full
    bytes, from the store when the letter holds only their head)."""
    from streams.client import send_raw

    key, value = await originals(letter, store)
    topic, part, _ = letter.source
    headers = [(k, v) for k, v in letter.headers if not k.startswith("dlq-")]
    headers.append((REDRIVE_OF, f"{T.DLQ}@{letter.partition}:{letter.offset}".encode()))
    return await send_raw(settings, str(topic), key, value, headers,
                          partition=part if part is not None and part >= 0 else None)


async def execute(settings: Settings, d: Decision, store: ArtifactStore | None = None) -> str:
    """Carry out one decision; return what was done. Raises `OriginalMissing` (nothing
    sent) for a poison record whose full bytes the store does not have."""
    if d.action == "task":
        await produce(settings, T.EVENTS, "TaskRedriveRequested", d.event,
                      key=d.event["plan_id"])
        return d.detail.replace("revive", "asked the processor to revive", 1)
    part, off = await _republish(settings, d.letter, store or settings.artifact_store())
    topic = str(d.letter.source[0])
    await produce(settings, T.OPS, "OpsDecision", {
        "decision_id": new_id(), "plan_id": None, "action": "redrive",
        "reason": redrive_reason(d.letter.offset),
        "params": {"dlq_partition": str(d.letter.partition), "dlq_offset": str(d.letter.offset),
                   "topic": topic, "partition": str(part), "offset": str(off)},
        "at": now_ms()}, key="dlq")
    return f"republished to {topic}[{part}]@{off}"
