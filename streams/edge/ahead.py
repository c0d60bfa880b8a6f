"""Folding a record when one of the processor's readers first has it, not when Faust's
stream brings it.

A slot's turn used to include a read-back: the dispatcher logs `TaskDispatched`, and the
plan's processor sends the work item once its stream brings the record back (at 4 slots
per worker, 42 of a 72 ms turn). Two readers are sooner: the dispatcher's follower, a
plain consumer that reads `devline.events` for results anyway, and the broker's
acknowledgement of a dispatch this process logged (partition P, offset O, and the bytes
just sent). If the stream has handed this process every record of P before O, the record
at O is the next one the fold would take: folding it now is folding it in log order. When
the stream brings O, it is skipped.

Anything short of that (another partition's owner, a record not yet read in between, a
rebalance) leaves the record to the stream, as before. The log stays the only truth: a
crash after folding first and before the offset is committed reads O again, which is a
redelivery the fold already takes (every record remembers the last position applied).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from streams.edge.ports import RawRecord


class Ahead:
    """Where the stream is, per partition, and which records were folded before it."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}     # offset the stream hands us next, per partition
        self.folded: dict[int, set[int]] = {}  # folded ahead, not yet brought by the stream
        self.count = 0                     # records folded ahead since start
        self.skipped = 0                   # ... and skipped when the stream brought them

    def reset(self) -> None:
        """Partitions were assigned: forget positions. Until the stream hands a
        partition's next record, nothing of it is folded first; one folded first and not
        yet committed is read again and folded as a redelivery."""
        self.next.clear()
        self.folded.clear()

    def foldable(self, partition: int, offsets: Iterable[int]) -> list[int]:
        """Those of `offsets` that may be folded now: a run starting at the stream's
        position, with nobody's record in between."""
        at = self.next.get(partition)
        if at is None:  # the stream has handed nothing of it since the assignment
            return []
        run = []
        for offset in sorted(offsets):
            if offset < at:
                continue  # folded already
            if offset != at:
                break
            run.append(offset)
            at += 1
        return run

    def done(self, partition: int, offsets: Sequence[int]) -> None:
        """`offsets` (a run from `foldable`) were folded."""
        if not offsets:
            return
        self.folded.setdefault(partition, set()).update(offsets)
        self.next[partition] = offsets[-1] + 1
        self.count += len(offsets)

    def unread(self, recs: Sequence[RawRecord]) -> list[RawRecord]:
        """The records of `recs` (as the stream brought them, in order) not yet folded;
        notes where the stream is."""
        out = []
        for rec in recs:
            folded = self.folded.get(rec.partition)
            if folded and rec.offset in folded:
                self.skipped += 1
            else:
                out.append(rec)
            if folded:  # the stream is past them: none of these is coming any more
                folded.difference_update([o for o in folded if o <= rec.offset])
            # Ahead of the stream (records folded first) or where it is.
            self.next[rec.partition] = max(self.next.get(rec.partition, 0), rec.offset + 1)
        return out
