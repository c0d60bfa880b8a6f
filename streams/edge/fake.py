"""In-memory ports for the edge, with crash injection: tables, a log, an artifact store.

Like faststream's `TestKafkaBroker`, these keep the edge's real code paths (the codec, the
fold, every effect) and replace only the broker and the disk, so crash-at-every-step and
redelivery scenarios run as unit tests in milliseconds. `CrashPlan.step` is called before
every table write, every send and every artifact write; at the chosen step it raises
`Crash`, which no retry loop catches: the simulated process is dead, and what it wrote
before stays written (a Faust changelog write or a Kafka send that left the process).
"""

from __future__ import annotations

import asyncio
import copy
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.artifacts import sha256
from streams.edge.ports import RawRecord


class Crash(BaseException):
    """A simulated process death at an injected point (not an Exception: nothing retries it)."""


class CrashPlan:
    """Numbers the effect boundaries of a run and dies at each step in `at`."""

    def __init__(self, at: Iterable[int] = ()) -> None:
        self.at = set(at)
        self.steps = 0
        self.crashes = 0
        self.trace: list[str] = []

    def step(self, what: str) -> None:
        self.steps += 1
        self.trace.append(what)
        if self.steps in self.at:
            self.crashes += 1
            raise Crash(f"crash at step {self.steps}: before {what}")


class FakeTable(dict[str, Any]):
    """A table whose writes persist (like a changelog) and may be where a crash lands."""

    def __init__(self, name: str, crash: CrashPlan) -> None:
        super().__init__()
        self.name = name
        self.crash = crash

    def __setitem__(self, key: str, value: Any) -> None:
        self.crash.step(f"write {self.name}[{key}]")
        super().__setitem__(key, copy.deepcopy(value))

    def __delitem__(self, key: str) -> None:
        self.crash.step(f"delete {self.name}[{key}]")
        super().__delitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        # Like Faust's memory store: the stored object itself (writers replace, never edit).
        return super().get(key, default)


@dataclass
class FakeLog:
    """Topics as lists of records (one partition each, offsets from 0). With `acks`, a
    send returns its delivery as a producer does: a future of where the record landed
    (the record itself: it has `topic`, `partition` and `offset`)."""

    crash: CrashPlan
    topics: dict[str, list[RawRecord]] = field(default_factory=lambda: defaultdict(list))
    acks: bool = False

    async def send(self, topic: str, *, key: bytes | None, value: bytes | None,
                   partition: int | None, headers: list[tuple[str, bytes]]
                   ) -> asyncio.Future[RawRecord] | None:
        self.crash.step(f"send {topic}")
        rec = self.append(topic, key, value, headers)
        if not self.acks:
            return None
        delivery: asyncio.Future[RawRecord] = asyncio.get_running_loop().create_future()
        delivery.set_result(rec)
        return delivery

    def append(self, topic: str, key: bytes | None, value: bytes | None,
               headers: list[tuple[str, bytes]] | None = None) -> RawRecord:
        records = self.topics[topic]
        rec = RawRecord(topic, 0, len(records), key, value, tuple(headers or ()))
        records.append(rec)
        return rec


class FakeStore:
    """An artifact store in a dict; `put` is a step a crash can land on."""

    def __init__(self, crash: CrashPlan) -> None:
        self.crash = crash
        self.blobs: dict[str, bytes] = {}
        self.refs: dict[str, str] = {}

    async def put(self, data: bytes) -> str:
        digest = sha256(data)
        if digest not in self.blobs:
            self.crash.step(f"store {digest[:12]}")
            self.blobs[digest] = data
        return digest

    async def get(self, digest: str) -> bytes | None:
        return self.blobs.get(digest)

    async def put_ref(self, name: str, digest: str) -> None:
        if self.refs.get(name) != digest:
            self.crash.step(f"ref {name[:12]}")
            self.refs[name] = digest

    async def get_ref(self, name: str) -> str | None:
        return self.refs.get(name)
