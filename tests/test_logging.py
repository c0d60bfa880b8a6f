"""Log lines a broker outage repeats every few milliseconds are counted, not printed."""

from __future__ import annotations

import logging

from devline.cli.common import Repeats


def record(name: str, msg: str, at: float) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("x",), None)
    rec.created = at
    return rec


def test_a_repeated_client_line_is_shown_once_per_window_with_a_count() -> None:
    f = Repeats(window=10.0)
    shown = [f.filter(record("aiokafka.conn", "Unable connect to %s", t / 10)) for t in range(50)]
    assert shown.count(True) == 1
    later = record("aiokafka.conn", "Unable connect to %s", 11.0)
    assert f.filter(later) and "49 more like this" in str(later.msg)


def test_our_own_lines_are_never_filtered() -> None:
    f = Repeats(window=10.0)
    assert all(f.filter(record("devline.worker", "skipping %s", 0.0)) for _ in range(5))
