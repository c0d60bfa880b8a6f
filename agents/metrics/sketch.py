"""A mergeable quantile sketch (DDSketch, 1% relative accuracy) with a JSON form.

Only this module touches the ddsketch package and its internals, so a new release or a
different sketch changes one file. Bin limit 2048 at alpha 0.01 covers values spanning a
factor of ~4e17 before the lowest bins collapse, so collapsing does not happen in practice.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ddsketch import LogCollapsingLowestDenseDDSketch

RELATIVE_ACCURACY = 0.01
BIN_LIMIT = 2048


class Sketch:
    """Count, sum, min, max and quantiles of a stream of numbers."""

    def __init__(self) -> None:
        self._s = LogCollapsingLowestDenseDDSketch(RELATIVE_ACCURACY, BIN_LIMIT)

    def add(self, value: float) -> None:
        self._s.add(value)

    def merge(self, other: Sketch) -> None:
        self._s.merge(other._s)

    @property
    def count(self) -> int:
        return int(self._s.count)

    @property
    def sum(self) -> float:
        return float(self._s.sum)

    @property
    def min(self) -> float:
        return float(self._s._min)

    @property
    def max(self) -> float:
        return float(self._s._max)

    def quantile(self, q: float) -> float:
        """Return the q-quantile (within 1% relative error); NaN when empty."""
        v = self._s.get_quantile_value(q)
        return math.nan if v is None else float(v)

    def bins(self) -> int:
        """Number of allocated bins (the memory that grows with the spread of values)."""
        return len(self._s._store.bins) + len(self._s._negative_store.bins)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able form: the non-empty key range of each store and the totals."""
        s = self._s
        return {"a": RELATIVE_ACCURACY, "p": _store_out(s._store),
                "n": _store_out(s._negative_store),
                "z": _num(s._zero_count), "c": _num(s._count), "s": s._sum,
                "lo": s._min if s._count else None, "hi": s._max if s._count else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sketch:
        """Rebuild from `to_dict` output."""
        if float(data.get("a", RELATIVE_ACCURACY)) != RELATIVE_ACCURACY:
            raise ValueError(f"sketch accuracy {data.get('a')!r} != {RELATIVE_ACCURACY}")
        out = cls()
        s = out._s
        _store_in(s._store, data["p"])
        _store_in(s._negative_store, data["n"])
        s._zero_count = float(data["z"])
        s._count = float(data["c"])
        s._sum = float(data["s"])
        if data["lo"] is not None:
            s._min, s._max = float(data["lo"]), float(data["hi"])
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Sketch:
        return cls.from_dict(json.loads(text))


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


def _store_out(store: Any) -> list[Any]:
    if store.count == 0:
        return []
    lo, hi = store.min_key, store.max_key
    bins, off = store.bins, store.offset
    counts = [_num(bins[k - off]) if 0 <= k - off < len(bins) else 0 for k in range(lo, hi + 1)]
    return [lo, counts, bool(getattr(store, "is_collapsed", False))]


def _store_in(store: Any, data: list[Any]) -> None:
    if not data:
        return
    lo, counts, collapsed = int(data[0]), data[1], bool(data[2])
    for i, c in enumerate(counts):
        if c:
            store.add(lo + i, float(c))
    store.is_collapsed = collapsed
