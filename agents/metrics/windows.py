"""Window arithmetic: which tumbling or hopping windows an event time falls in."""

from __future__ import annotations

import math
from dataclasses import dataclass

from devline.errors import ConfigError


@dataclass(frozen=True)
class WindowSpec:
    """A window shape. `hop_s` None means tumbling (hop == size).

    `grace_s` is how long after a window's end, in event time, points may still join it.
    """

    size_s: int
    hop_s: int | None = None
    grace_s: int = 10

    def __post_init__(self) -> None:
        if self.size_s < 1:
            raise ConfigError(f"window size must be >= 1 s, got {self.size_s!r}")
        if self.hop_s is not None and not 1 <= self.hop_s <= self.size_s:
            raise ConfigError(f"window hop must be in [1, size], got {self.hop_s!r}")
        if self.hop_s is not None and self.size_s % self.hop_s:
            raise ConfigError("window size must be a multiple of the hop")
        if self.grace_s < 0:
            raise ConfigError(f"grace must be >= 0 s, got {self.grace_s!r}")

    @property
    def size_ms(self) -> int:
        return self.size_s * 1000

    @property
    def hop_ms(self) -> int:
        return (self.hop_s or self.size_s) * 1000

    @property
    def grace_ms(self) -> int:
        return self.grace_s * 1000

    @property
    def max_open(self) -> int:
        """Open windows one series can hold at once: ceil((size + grace) / hop)."""
        return math.ceil((self.size_ms + self.grace_ms) / self.hop_ms)


# 1-minute tumbling, and 5-minute windows every minute. The 5-minute tumbling windows are
# the hopping ones that start on a 5-minute boundary: same (size, start), same key, so they
# are computed once (see `Aggregator`), and a reader wanting tumbling ones filters on start.
DEFAULT_SPECS: tuple[WindowSpec, ...] = (
    WindowSpec(60, None, 10),
    WindowSpec(300, 60, 10),
)


def window_starts(at_ms: int, spec: WindowSpec) -> list[int]:
    """Return the start (ms) of every window of `spec` that contains `at_ms`, oldest first.

    Windows are aligned to the Unix epoch, [start, start + size).
    """
    hop, size = spec.hop_ms, spec.size_ms
    last = at_ms - at_ms % hop  # the newest window containing the point
    first = last - size + hop
    return list(range(first, last + 1, hop))
