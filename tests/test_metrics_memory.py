"""Memory per open window and per series, the figures the aggregator's docstring states."""

from __future__ import annotations

import random
import tracemalloc

from agents.metrics import DEFAULT_SPECS, Aggregator, Point, Sketch

T0 = 1_700_000_040_000


def _bytes_per_sketch(values_per_sketch: int, decades: int) -> float:
    rnd = random.Random(7)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        sketches = [Sketch() for _ in range(50)]
        for s in sketches:
            for _ in range(values_per_sketch):
                s.add(10 ** (rnd.random() * decades))
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(d.size_diff for d in after.compare_to(before, "filename")) / len(sketches)


def test_bytes_per_open_window() -> None:
    assert _bytes_per_sketch(1, 1) < 3_000
    assert _bytes_per_sketch(1000, 1) < 7_000
    assert _bytes_per_sketch(1000, 4) < 20_000


def test_open_windows_per_series_stay_bounded() -> None:
    """A steady stream keeps at most sum(ceil((size + grace) / hop)) = 8 windows open."""
    agg = Aggregator(DEFAULT_SPECS)
    bound = sum(s.max_open for s in DEFAULT_SPECS)
    assert bound == 8
    peak = 0
    for i in range(3000):  # 50 minutes, a point every second
        at = T0 + i * 1000
        agg.add(Point("s", "m", float(i % 17), at), at)
        peak = max(peak, agg.open_windows())
    assert peak <= bound
