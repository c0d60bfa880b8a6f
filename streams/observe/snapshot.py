"""Snapshots of the read side: its projections and the log positions they fold up to.

`devline.events` is kept forever, so a read side that folds it from the beginning starts
slower every day. Every `observe_snapshot_s` (and when it stops) the service writes its
state to the artifact store under a ref named for its topic prefix: the live plans, the
rollouts, the newest event ids counted, and the next offset of every partition of
`devline.events` and `devline.rollouts` that state includes. A start that finds one
restores it and reads on from those offsets; the result is the state a fold from the
beginning gives, because the projections are pure folds of those records in order.

A snapshot that cannot be read (missing object, another version, other partitions) is
ignored with a log line: the service folds from the beginning, as without one.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from agents.scheduling import fold as F
from streams.observe.projection import PlanProjection
from streams.observe.rollouts import RolloutView

VERSION = 1
MAGIC = b"devline-observe-snapshot\n"
SEEN_KEPT = 5_000  # newest event ids carried over (a redelivery is of recent records)

Offsets = dict[str, dict[int, int]]  # topic (unprefixed) -> partition -> next offset


class SnapshotError(ValueError):
    """The bytes are not a snapshot this version can restore."""


@dataclass
class Snapshot:
    offsets: Offsets
    taken_at_ms: int
    plans: dict[str, F.PlanState]
    seen: list[str]
    rollouts: dict[str, dict[str, Any]]
    audit: dict[str, list[dict[str, Any]]]


def snapshot_ref(topic_prefix: str) -> str:
    """The store ref holding the read side's newest snapshot for a prefix (a sha256 name,
    as every ref is)."""
    return hashlib.sha256(f"observe-snapshot\x1f{topic_prefix}".encode()).hexdigest()


class Encoder:
    """Encodes snapshots, re-encoding only the plans changed since the last one: a plan's
    compressed JSON is kept until `PlanProjection.dirty` names it again, so a snapshot
    holds the read side's loop for the plans that moved, not for every plan in retention.

    The object: `MAGIC`, the header's length (8 bytes, big-endian), the header (compressed
    JSON: offsets, event ids, rollouts, and each plan's place in the rest), then each
    plan's compressed JSON."""

    def __init__(self) -> None:
        self.parts: dict[str, bytes] = {}

    def dump(self, plans: PlanProjection, rollouts: RolloutView, offsets: Offsets,
             taken_at_ms: int) -> bytes:
        for pid in [p for p in self.parts if p not in plans.plans]:
            del self.parts[pid]
        for pid, st in plans.plans.items():
            if pid in plans.dirty or pid not in self.parts:
                self.parts[pid] = zlib.compress(json.dumps(
                    {"header": st.header, "tasks": dict(st.tasks), "clock": st.clock},
                    separators=(",", ":")).encode(), 1)
        plans.dirty.clear()
        index, at = {}, 0
        for pid, part in self.parts.items():
            index[pid] = [at, len(part)]
            at += len(part)
        header = zlib.compress(json.dumps({
            "version": VERSION, "taken_at_ms": taken_at_ms,
            "offsets": {t: {str(p): o for p, o in parts.items()}
                        for t, parts in offsets.items()},
            "plans": index, "seen": list(plans._seen)[-SEEN_KEPT:],
            "rollouts": dict(rollouts.states), "audit": rollouts.audit,
        }, separators=(",", ":")).encode(), 1)
        return b"".join([MAGIC, len(header).to_bytes(8, "big"), header, *self.parts.values()])


def dump(plans: PlanProjection, rollouts: RolloutView, offsets: Offsets,
         taken_at_ms: int) -> bytes:
    """A whole snapshot at once (every plan encoded)."""
    return Encoder().dump(plans, rollouts, offsets, taken_at_ms)


def load(data: bytes) -> Snapshot:
    """Parse a snapshot; SnapshotError when it is not one of this version."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise SnapshotError("not a snapshot of this version (no devline snapshot header)")
    size = int.from_bytes(data[len(MAGIC):len(MAGIC) + 8], "big")
    start = len(MAGIC) + 8 + size
    try:
        body = json.loads(zlib.decompress(data[len(MAGIC) + 8:start]))
    except (zlib.error, ValueError) as exc:
        raise SnapshotError(f"not a snapshot: {exc}") from exc
    if not isinstance(body, dict) or body.get("version") != VERSION:
        found = body.get("version") if isinstance(body, dict) else None
        raise SnapshotError(f"snapshot version {found!r}, this reader restores {VERSION}")
    try:
        plans = {}
        for pid, (at, length) in body["plans"].items():
            p = json.loads(zlib.decompress(data[start + at:start + at + length]))
            plans[pid] = F.PlanState(p["header"], p["tasks"], int(p["clock"]))
        return Snapshot(
            offsets={t: {int(p): int(o) for p, o in parts.items()}
                     for t, parts in body["offsets"].items()},
            taken_at_ms=int(body["taken_at_ms"]), plans=plans,
            seen=[str(e) for e in body["seen"]],
            rollouts=dict(body["rollouts"]), audit=dict(body["audit"]))
    except (KeyError, TypeError, ValueError, AttributeError, zlib.error) as exc:
        raise SnapshotError(f"snapshot is incomplete: {exc!r}") from exc


def restore(snap: Snapshot, plans: PlanProjection, rollouts: RolloutView) -> None:
    """Put a snapshot's state into (empty) projections."""
    plans.plans = dict(snap.plans)
    plans._seen = OrderedDict((e, None) for e in snap.seen)
    rollouts.states = OrderedDict(snap.rollouts)
    rollouts.audit = dict(snap.audit)
