"""One ops tick, pure: the facts and the newest windows → rules → governor → decisions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.metrics import Aggregate
from agents.ops import (
    DEFAULT_CONFIG,
    Decision,
    Governor,
    GovernorConfig,
    OpsView,
    RuleConfig,
    Suppressed,
    run_rules,
)
from agents.ops.rules import canary_facts
from streams.ops.facts import Facts
from streams.ops.records import governor_state

KEEP_WINDOWS_MS = 30 * 60_000  # rules read the newest closed windows; older ones go


@dataclass(frozen=True)
class OpsConfig:
    """How the ops stage decides: rule thresholds, governor limits, tick and dry run."""

    interval_s: float = 10.0
    dry_run: bool = False
    rules: RuleConfig = DEFAULT_CONFIG
    governor: GovernorConfig = field(default_factory=GovernorConfig)
    worker_timeout_s: float = 15.0
    keep_windows_ms: int = KEEP_WINDOWS_MS

    def governor_config(self) -> GovernorConfig:
        g = self.governor
        return GovernorConfig(self.dry_run, g.cooldown_s, g.reverse_cooldown_s,
                              g.max_scale_step, g.remember_s)


class OpsCore:
    """Inputs fold into `facts` and `aggregates`; `decide(now_ms)` is one tick."""

    def __init__(self, config: OpsConfig | None = None) -> None:
        self.config = config or OpsConfig()
        self.facts = Facts(worker_timeout_s=self.config.worker_timeout_s)
        self.aggregates: dict[str, Aggregate] = {}
        self.governor = Governor(self.config.governor_config())
        self.suppressed: list[Suppressed] = []  # of the latest tick, for the log

    def restore(self, past: Iterable[Decision]) -> None:
        """Rebuild the governor from the decisions already on devline.ops, and what the
        acted ones changed."""
        past = list(past)
        self.governor = Governor.restore(governor_state(past), self.config.governor_config())
        for d in sorted(past, key=lambda d: d.at):
            self.facts.on_decision(d)

    def on_window(self, record: Mapping[str, Any]) -> None:
        """One MetricAggregate (a compacted topic redelivers by key: the last one wins)."""
        rec = dict(record)
        if "window_size" not in rec:  # the Avro record names it window_size_ms
            rec["window_size"] = rec["window_size_ms"]
        agg = Aggregate.from_record(rec)
        self.aggregates[agg.key] = agg

    def view(self, now_ms: int) -> OpsView:
        keep = now_ms - self.config.keep_windows_ms
        self.aggregates = {k: a for k, a in self.aggregates.items() if a.window_end >= keep}
        view = self.facts.view(now_ms)
        view.aggregates = dict(self.aggregates)
        view.canaries = canary_facts(self.aggregates.values(), self.config.rules)
        return view

    def decide(self, now_ms: int) -> list[Decision]:
        """Run the rules on the view as of `now_ms`; return what the governor let through
        (already applied to the facts, as the dispatcher will apply them)."""
        proposals = run_rules(self.view(now_ms), now_ms, self.config.rules)
        decisions = self.governor.apply(proposals, now_ms)
        self.suppressed = list(self.governor.suppressed)
        for d in decisions:
            self.facts.on_decision(d)
        return decisions
