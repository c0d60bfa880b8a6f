"""Which records may be folded before Faust's stream brings them (`streams.edge.ahead`)."""

from __future__ import annotations

from streams.edge.ahead import Ahead
from streams.edge.ports import RawRecord


def rec(partition: int, offset: int) -> RawRecord:
    return RawRecord("devline.events", partition, offset, b"p", b"")


def at(partition: int, offset: int) -> Ahead:
    """Assigned, and the stream has handed every record of `partition` before `offset`."""
    ahead = Ahead()
    ahead.unread([rec(partition, offset - 1)])
    return ahead


def test_nothing_is_foldable_before_the_stream_has_handed_a_record() -> None:
    ahead = Ahead()
    assert ahead.foldable(0, [0, 1]) == []  # not assigned yet
    ahead.reset()
    assert ahead.foldable(0, [0, 1]) == []  # assigned, but where the stream is is unknown


def test_the_run_that_starts_where_the_stream_is() -> None:
    ahead = at(0, 10)
    assert ahead.foldable(0, [10, 11, 12]) == [10, 11, 12]
    assert ahead.foldable(0, [12, 10, 11]) == [10, 11, 12]  # in log order
    assert ahead.foldable(0, [8, 9, 10, 11]) == [10, 11]  # the stream handed 8 and 9
    assert ahead.foldable(0, [10, 12]) == [10]  # 11 is someone else's: the stream's
    assert ahead.foldable(0, [11, 12]) == []  # 10 is not here
    assert ahead.foldable(1, [10]) == []  # another partition: its position is unknown


def test_records_folded_first_are_skipped_when_the_stream_brings_them() -> None:
    ahead = at(0, 10)
    ahead.done(0, [10, 11])
    assert ahead.count == 2
    assert ahead.foldable(0, [10, 11, 12]) == [12]  # the next one after them
    out = ahead.unread([rec(0, 10), rec(0, 11), rec(0, 12), rec(1, 5)])
    assert out == [rec(0, 12), rec(1, 5)]
    assert ahead.skipped == 2
    assert ahead.folded[0] == set()  # nothing kept for records the stream is past
    assert ahead.foldable(0, [13]) == [13] and ahead.foldable(1, [6]) == [6]


def test_the_stream_behind_records_folded_first_does_not_move_the_position_back() -> None:
    ahead = at(0, 10)
    ahead.done(0, [10, 11, 12])
    assert ahead.unread([rec(0, 10)]) == []
    assert ahead.foldable(0, [13]) == [13]  # not 11: 11 and 12 are folded already
    assert ahead.folded[0] == {11, 12}


def test_a_record_folded_first_that_the_stream_jumps_over_is_forgotten() -> None:
    ahead = at(0, 10)
    ahead.done(0, [10])
    assert ahead.unread([rec(0, 11)]) == [rec(0, 11)]  # 10 never came (compacted, a seek)
    assert ahead.folded[0] == set()


def test_a_rebalance_forgets_every_position_and_what_was_folded_first() -> None:
    ahead = at(0, 10)
    ahead.done(0, [10])
    ahead.reset()  # assigned again: read again from the commit, folded again
    assert ahead.foldable(0, [11]) == []
    assert ahead.unread([rec(0, 10)]) == [rec(0, 10)]
    assert ahead.foldable(0, [11]) == [11]
