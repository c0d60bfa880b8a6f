"""Which labels become dimensions of a metric's series, and how many series a metric may have.

Cardinality is bounded twice:
- an allow-list of label names per metric (`DEFAULT_ALLOW`); metrics not listed keep only
  labels from `LOW_CARDINALITY` (names whose values come from a small fixed set), so a path,
  a task id, a worker id or a host never becomes a dimension by accident;
- at most `max_series` (50) distinct dimension sets per metric; a new set beyond that is
  folded into one overflow series whose every kept label reads `other`. A series slot is
  freed after `series_ttl_s` (1 h) of event time without points, so finished plans give
  their slots back. Values are cut to `max_value_len` (64) characters.
With the default windows (8 open windows per series, see `Aggregator`) a metric holds at
most 51 x 8 = 408 open windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Dims = tuple[tuple[str, str], ...]

OTHER = "other"

# Label names whose values come from a small fixed set.
LOW_CARDINALITY: frozenset[str] = frozenset({
    "executor", "kind", "status", "outcome", "check", "chain", "passed", "cause",
    "reverted", "stage", "shards", "state", "action",
})

# Per metric, the labels kept. plan_id is kept only where an ops rule needs it per plan
# (live plans are few; the series cap bounds them anyway).
DEFAULT_ALLOW: Mapping[str, tuple[str, ...]] = {
    "backlog": (), "in_flight": (), "workers": (),
    "replicas_current": (), "replicas_desired": (), "replicas_draining": (),
    "breaker_state": ("executor",),
    "executor.calls": ("executor", "outcome"),
    "qa.verdicts": ("chain", "passed", "plan_id"),
    "qa.check_seconds": ("check", "status"),
    "qa.chain_seconds": ("chain",),
    "qa.fix_decisions": ("outcome", "reverted", "cause"),
    "integration.shard_seconds": ("shards",),
    # A canary's analysis measurements (`canary.<metric>`, from the rollout stage), per
    # plan and revision: live rollouts are few, and the ops agent's canary rule needs them.
    "canary.*": ("plan_id", "revision"),
}


@dataclass(frozen=True)
class DimensionPolicy:
    """Label allow-lists and the per-metric series cap."""

    allow: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ALLOW))
    default_labels: frozenset[str] = LOW_CARDINALITY
    max_series: int = 50
    series_ttl_s: int = 3600
    max_value_len: int = 64

    def kept(self, metric: str, labels: Mapping[str, str]) -> Dims:
        """Return the dimensions a point's labels give, before the series cap."""
        names = self.allow.get(metric)
        if names is None and "." in metric:
            names = self.allow.get(metric.split(".", 1)[0] + ".*")
        keep = (lambda k: k in names) if names is not None else (
            lambda k: k in self.default_labels)
        return tuple(sorted((k, str(v)[:self.max_value_len]) for k, v in labels.items()
                            if keep(k)))


def overflow(dims: Dims) -> Dims:
    """Return the overflow series for a metric whose series cap is reached."""
    return tuple((k, OTHER) for k, _ in dims)


def dims_text(dims: Dims) -> str:
    """Return `k=v,k=v` (sorted), the form used in aggregate keys."""
    return ",".join(f"{k}={v}" for k, v in dims)
