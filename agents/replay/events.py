"""A plan's events as replay sees them, numbered by a per-plan sequence number.

**The sequence number is derived, not stamped.** A plan's events have several writers (the
planner, the plan's processor, the elected dispatcher, workers, `devline dlq redrive`), so
no single writer could count them. They share one partition (the key is the plan id), so
the plan's records in offset order are one total order that every reader sees the same:
`seq` is a record's position among the records keyed by that plan, from 1. It does not
depend on other plans' records in the partition (unlike the offset), so it is the same in a
copy of the plan's events in another topic or cluster, and on every re-read. A duplicate
written after a crash (the same event id sent again) is a record of its own with its own
number, forever: the log is append-only, so numbers never shift. The fold ignores the
duplicate, so the state at any `seq` is the same whether or not a crash added one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PlanEvent:
    """One record keyed by the plan. `event_type` and `value` are None when the record
    cannot be decoded (the processor dead-letters it; it still has a number)."""

    seq: int
    partition: int
    offset: int
    timestamp: int  # the record's timestamp, ms since the epoch
    event_type: str | None
    value: dict[str, Any] | None


def numbered(records: Iterable[tuple[int, int, int, str | None, dict[str, Any] | None]]
             ) -> list[PlanEvent]:
    """(partition, offset, timestamp, type, value) of one plan's records, in any order, as
    `PlanEvent`s numbered from 1 in log order."""
    ordered = sorted(records, key=lambda r: (r[0], r[1]))
    return [PlanEvent(i, p, o, ts, et, v) for i, (p, o, ts, et, v) in enumerate(ordered, 1)]


def lineage_hash(events: Iterable[PlanEvent]) -> str:
    """sha256 of the decoded events (type and value, in order): what a fork started from.
    Offsets and timestamps are left out, so a copy of the log hashes the same."""
    h = hashlib.sha256()
    for ev in events:
        h.update(json.dumps([ev.seq, ev.event_type, ev.value], sort_keys=True,
                            default=str).encode())
        h.update(b"\n")
    return h.hexdigest()
