"""The catch-up gate: after a (re)assignment, nothing acts on the dispatcher's memory until
the processor has read its partitions up to the end offsets seen when they were assigned (a
task whose dispatch is still in the unread part of the log must not be dispatched again)."""

from __future__ import annotations

from collections.abc import Mapping

# Catch-up that reads nothing for this long with the broker link up will not finish (the
# log was truncated under us): act on what was read rather than wedge. Dispatches stay safe:
# a work item is only sent once the fold has read its dispatch back.
CATCHUP_STALL_S = 60.0


class CatchUp:
    """Has the processor read its event partitions up to where they ended at assignment?"""

    def __init__(self) -> None:
        self.pending: dict[int, int] = {}
        self.active = False
        self.progress_at = 0.0  # when the last record of a pending partition was read

    def start(self, ends: Mapping[int, int], committed: Mapping[int, int | None],
              now: float = 0.0) -> None:
        self.pending = {p: end for p, end in ends.items() if (committed.get(p) or 0) < end}
        self.active = True
        self.progress_at = now

    def seen(self, partition: int, offset: int, now: float = 0.0) -> None:
        end = self.pending.get(partition)
        if end is None:
            return
        self.progress_at = now
        if offset + 1 >= end:
            del self.pending[partition]

    def stalled(self, now: float, after: float = CATCHUP_STALL_S) -> bool:
        """Still waiting, with nothing read for `after` seconds: the records up to the end
        offset will not come (the log was truncated under us, or an offset is a gap)."""
        return self.active and bool(self.pending) and now - self.progress_at > after

    def give_up(self) -> list[int]:
        """Stop waiting; returns the partitions that never reached their end offset."""
        late, self.pending = sorted(self.pending), {}
        return late

    @property
    def done(self) -> bool:
        return self.active and not self.pending
