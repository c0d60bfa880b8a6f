"""The aggregator fold: closing on the watermark, grace, late points, idle flushes, and state
that checkpoints and rebuilds to exactly the same aggregates."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.metrics import Aggregate, Aggregator, Point, WindowSpec

T0 = 1_700_000_100_000  # a 5-minute boundary
MIN = 60_000
SPEC = [WindowSpec(60, None, 10)]


def _p(value: float, at: int, name: str = "task_seconds", **labels: str) -> Point:
    return Point("worker", name, value, at, labels)


def test_window_closes_when_watermark_passes_end_plus_grace() -> None:
    agg = Aggregator(SPEC)
    assert agg.add(_p(1.0, T0 + 1000), T0 + 1000) == []
    assert agg.add(_p(3.0, T0 + 2000), T0 + 2000) == []
    assert agg.add(_p(5.0, T0 + MIN + 9_999), T0 + MIN + 9_999) == []  # end + grace not reached
    (out,) = agg.add(_p(7.0, T0 + MIN + 10_000), T0 + MIN + 10_000)
    assert (out.window_start, out.window_size, out.count, out.sum) == (T0, MIN, 2, 4.0)
    assert (out.min, out.max) == (1.0, 3.0)
    assert out.key == f"task_seconds||60000|{T0}"


def test_late_point_within_grace_updates_its_window() -> None:
    agg = Aggregator(SPEC)
    agg.add(_p(1.0, T0 + 1000), T0 + 1000)
    agg.add(_p(1.0, T0 + MIN + 5000), T0 + MIN + 5000)  # watermark in the first's grace
    agg.add(_p(10.0, T0 + 30_000), T0 + 30_000)  # late, but within grace
    (out,) = agg.tick(T0 + 10**6)[:1]
    assert (out.window_start, out.count, out.max) == (T0, 2, 10.0)
    assert agg.late_dropped == {}


def test_point_later_than_grace_is_counted_not_lost_silently() -> None:
    agg = Aggregator(SPEC)
    agg.add(_p(1.0, T0 + 1000), T0 + 1000)
    closed = agg.add(_p(1.0, T0 + MIN + 10_000), T0 + MIN + 10_000)
    assert [a.window_start for a in closed] == [T0]
    assert agg.add(_p(99.0, T0 + 2000), T0 + 2000) == []
    assert agg.late_dropped == {"task_seconds": 1}
    assert agg.stats()["late_dropped"] == {"task_seconds": 1}
    # The closed window is not reopened by the late point.
    assert all(a.window_start != T0 for a in agg.tick(T0 + 10**6))


def test_point_partly_late_joins_the_windows_still_open() -> None:
    agg = Aggregator([WindowSpec(60, None, 0), WindowSpec(300, None, 0)])
    agg.add(_p(1.0, T0 + 1000), T0 + 1000)
    agg.add(_p(1.0, T0 + MIN), T0 + MIN)  # closes the first minute, not the 5-minute window
    agg.add(_p(5.0, T0 + 2000), T0 + 2000)
    assert agg.late_dropped == {"task_seconds": 1}
    five = [a for a in agg.tick(T0 + 10**7) if a.window_size == 5 * MIN]
    assert five[0].count == 3


def test_idle_stream_is_flushed_by_the_clock() -> None:
    agg = Aggregator(SPEC, idle_ms=10_000)
    agg.add(_p(2.0, T0 + 1000), T0 + 1000)
    assert agg.tick(T0 + MIN + 19_999) == []
    (out,) = agg.tick(T0 + MIN + 20_000)
    assert out.count == 1
    assert agg.tick(T0 + MIN + 20_000) == []  # once


def test_points_from_the_far_future_and_non_finite_values_are_counted() -> None:
    agg = Aggregator(SPEC, max_future_ms=60_000)
    assert agg.add(_p(1.0, T0 + 61_000), T0) == []
    agg.add(_p(float("nan"), T0), T0)
    agg.add(_p(float("inf"), T0), T0)
    assert (agg.future_dropped, agg.invalid_dropped, agg.watermark) == (1, 2, None)


def test_hopping_windows_each_get_the_point_and_close_in_order() -> None:
    agg = Aggregator([WindowSpec(300, 60, 0)])
    agg.add(_p(1.0, T0 + 1000), T0 + 1000)
    out = agg.tick(T0 + 10 * MIN + 10_000)
    assert [a.window_start for a in out] == [T0 - 4 * MIN + i * MIN for i in range(5)]
    assert all(a.count == 1 and a.window_size == 5 * MIN for a in out)


def test_specs_of_one_size_share_windows() -> None:
    agg = Aggregator([WindowSpec(300, None, 10), WindowSpec(300, 60, 10)])
    agg.add(_p(1.0, T0 + 1000), T0 + 1000)
    out = agg.tick(T0 + 10**6)
    keys = [a.key for a in out]
    assert len(keys) == len(set(keys)) == 5


# -- rebuildable state ------------------------------------------------------------------
def _stream(seed: int, n: int = 600) -> list[Point]:
    """Points over ~10 minutes, out of order by up to 15 s, some beyond the grace."""
    rnd = random.Random(seed)
    points = []
    for i in range(n):
        at = T0 + i * 1000 - rnd.choice([0, 0, 0, 2000, 8000, 15_000])
        labels = {"executor": rnd.choice(["demo", "http"]), "task_id": f"t{i}",
                  "outcome": rnd.choice(["ok", "error"])}
        points.append(Point("w", rnd.choice(["a", "b"]), rnd.lognormvariate(0, 1), at, labels))
    return points


def _run(agg: Aggregator, points: list[Point]) -> list[Aggregate]:
    out: list[Aggregate] = []
    for p in points:
        out += agg.add(p, p.at)
    return out


def test_replaying_the_raw_points_rebuilds_the_same_aggregates() -> None:
    points = _stream(1)
    live, replay = Aggregator(), Aggregator()
    first = _run(live, points) + live.tick(T0 + 10**7)
    again = _run(replay, points) + replay.tick(T0 + 10**7)
    assert first == again
    assert first and live.late_dropped == replay.late_dropped and live.late_dropped


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.floats(0.05, 0.95))
def test_restart_with_open_windows_equals_an_uninterrupted_run(seed: int, cut: float) -> None:
    points = _stream(seed, 300)
    k = int(len(points) * cut)
    whole = Aggregator()
    expected = _run(whole, points) + whole.tick(T0 + 10**7)

    before = Aggregator()
    got = _run(before, points[:k])
    assert before.open_windows() > 0
    saved = json.loads(json.dumps(before.snapshot()))  # through a JSON table, as the edge does
    after = Aggregator.restore(saved)
    assert after.snapshot() == before.snapshot()
    got += _run(after, points[k:]) + after.tick(T0 + 10**7)
    assert got == expected
    assert after.stats() == whole.stats()


def test_idle_ticks_during_a_live_run_do_not_change_the_aggregates() -> None:
    """Ticks between bursts (the stream caught up, the clock moving) close windows a
    replay without ticks closes the same way."""
    points = sorted(_stream(3), key=lambda p: p.at)
    live, replay = Aggregator(), Aggregator()
    out: list[Aggregate] = []
    for p in points:
        out += live.add(p, p.at)
        out += live.tick(p.at)  # the clock at the newest point: never ahead of event time
    out += live.tick(T0 + 10**7)
    assert sorted(out, key=lambda a: a.key) == sorted(
        _run(replay, points) + replay.tick(T0 + 10**7), key=lambda a: a.key)
