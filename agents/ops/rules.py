"""The ops rules: pure functions `rule(view, now_ms, config) -> list[Proposal]`.

Each reads the newest closed windows (and plan facts) in an `OpsView` and names what it
read as evidence, so the decision id is a function of the inputs. A rule never remembers:
flapping, cool-downs and step limits are the `Governor`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agents.metrics import Aggregate
from agents.ops.types import Action, Proposal
from agents.ops.view import CanaryFacts, OpsView
from agents.resilience.autoscale import AutoscaleConfig, Autoscaler

MIN = 60_000


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the shipped rules (defaults in brackets in each rule's doc)."""

    stall_after_s: float = 120.0
    qa_window_ms: int = 5 * MIN
    qa_fail_share: float = 0.6
    qa_min_verdicts: int = 10
    plan_priority_step: float = 1.0
    scale: AutoscaleConfig = field(default_factory=AutoscaleConfig)
    scale_up_window_ms: int = MIN
    scale_down_window_ms: int = 5 * MIN
    executor_window_ms: int = 5 * MIN
    executor_error_rate: float = 0.5
    executor_min_calls: int = 10
    executor_resume_after_s: float = 300.0
    executor_resume_rate: float = 0.2
    # Canary metrics (`canary.<name>` windows the rollout stage's measurements feed) and
    # the mean a 1-minute window may not exceed; a rollout's own rules judge each
    # interval, this judges whole windows as a second opinion.
    canary_limits: Mapping[str, float] = field(
        default_factory=lambda: {"canary.error_rate": 0.1})
    canary_min_count: int = 3


DEFAULT_CONFIG = RuleConfig()


def stalled_critical_path(view: OpsView, now_ms: int,
                          config: RuleConfig = DEFAULT_CONFIG) -> list[Proposal]:
    """A critical-path task ready for longer than `stall_after_s` [120 s] while a worker is
    idle or busy with lower-priority work: raise it above every waiting task."""
    pool = view.pool
    top = max((t.priority for p in view.plans.values() for t in p.waiting.values()),
              default=0.0)
    out = []
    for plan in view.plans.values():
        for task in plan.waiting.values():
            waited = now_ms - task.ready_since
            if not task.critical or waited < config.stall_after_s * 1000:
                continue
            lower_running = (pool.min_running_priority is not None
                             and pool.min_running_priority < task.priority)
            if pool.idle <= 0 and not lower_running:
                continue
            why = f"{pool.idle} idle" if pool.idle > 0 else (
                f"running priority {pool.min_running_priority:g} < {task.priority:g}")
            out.append(Proposal(
                "stalled_critical_path", Action.REPRIORITISE,
                f"{plan.plan_id}/{task.task_id}",
                {"task_id": task.task_id, "priority": f"{top + 1:g}", "from": f"{task.priority:g}"},
                f"critical-path task {task.task_id} ready for {waited / 1000:.0f}s while {why}",
                (f"plan:{plan.plan_id}/task:{task.task_id}@ready:{task.ready_since}",),
                plan.plan_id))
    return out


def fix_rate_explosion(view: OpsView, now_ms: int,
                       config: RuleConfig = DEFAULT_CONFIG) -> list[Proposal]:
    """A plan whose QA verdicts failed more than `qa_fail_share` [60%] of at least
    `qa_min_verdicts` [10] in the newest 5-minute window: lower it and escalate."""
    by_plan: dict[str, list[Aggregate]] = {}
    for a in view.latest("qa.verdicts", config.qa_window_ms, now_ms):
        plan_id = a.dim("plan_id")
        if plan_id and plan_id != "other":
            by_plan.setdefault(plan_id, []).append(a)
    out = []
    for plan_id, aggs in sorted(by_plan.items()):
        total = sum(a.count for a in aggs)
        failed = sum(a.count for a in aggs if a.dim("passed") == "false")
        if total < config.qa_min_verdicts or failed <= config.qa_fail_share * total:
            continue
        plan = view.plans.get(plan_id)
        old = plan.priority if plan is not None else 0.0
        out.append(Proposal(
            "fix_rate_explosion", Action.REPRIORITISE, plan_id,
            {"scope": "plan", "priority": f"{old - config.plan_priority_step:g}",
             "from": f"{old:g}", "escalate": "true", "failed": str(failed),
             "verdicts": str(total)},
            f"{failed}/{total} QA verdicts failed in 5 min (> {config.qa_fail_share:.0%}): "
            "lowering the plan and escalating to the PM",
            tuple(a.key for a in aggs), plan_id))
    return out


def backlog_worker_target(view: OpsView, now_ms: int,
                          config: RuleConfig = DEFAULT_CONFIG) -> list[Proposal]:
    """The worker target the supervisor's autoscaler would pick (same `AutoscaleConfig`,
    same `recommend`): up at once on the newest 1-minute peak of backlog + in_flight, down
    only to the peak of the newest 5-minute window, nothing inside the tolerance band."""
    up = _single(view, "backlog", "in_flight", config.scale_up_window_ms, now_ms)
    down = _single(view, "backlog", "in_flight", config.scale_down_window_ms, now_ms)
    if up is None:
        return []  # blind: hold the pool as it is
    cfg, scaler = config.scale, Autoscaler(config.scale)
    current = view.pool.workers
    backlog, in_flight = int(up[0].max), int(up[1].max)
    load, capacity = backlog + in_flight, current * cfg.target_per_worker
    raw = scaler.recommend(backlog, in_flight)
    evidence = [a.key for a in up]
    if cfg.min_replicas <= current <= cfg.max_replicas and capacity > 0 and (
            abs(load - capacity) <= cfg.tolerance * capacity + 1e-9):
        return []
    if raw > current:
        desired, why = raw, f"load {load} wants {raw}"
    elif raw < current:
        if down is None:
            return []
        held = scaler.recommend(int(down[0].max), int(down[1].max))
        desired = max(raw, min(current, held))
        why = f"load {load} wants {raw}, 5-minute peak wants {held}"
        evidence += [a.key for a in down]
    else:
        return []
    if desired == current:
        return []
    return [Proposal("backlog_worker_target", Action.SCALE, "pool",
                     {"replicas": str(desired), "from": str(current)},
                     f"worker target {current} -> {desired}: {why}", tuple(evidence))]


def executor_errors(view: OpsView, now_ms: int,
                    config: RuleConfig = DEFAULT_CONFIG) -> list[Proposal]:
    """Pause an executor whose calls failed more than `executor_error_rate` [50%] of at
    least `executor_min_calls` [10] in the newest 5-minute window; resume a paused one after
    `executor_resume_after_s` [300 s] once a window since the pause shows at most
    `executor_resume_rate` [20%] errors, or too few calls to judge (the breaker probes)."""
    names = {a.dim("executor") for a in view.aggregates.values() if a.metric == "executor.calls"}
    names |= set(view.executors)
    out = []
    for name in sorted(n for n in names if n and n != "other"):
        facts = view.executors.get(name)
        paused = facts.paused_since if facts is not None else None
        aggs = view.latest("executor.calls", config.executor_window_ms, now_ms,
                           {"executor": name}, since=paused or 0)
        calls = sum(a.count for a in aggs)
        errors = sum(a.count for a in aggs if a.dim("outcome") == "error")
        rate = errors / calls if calls else 0.0
        evidence = tuple(a.key for a in aggs)
        if paused is None:
            if calls >= config.executor_min_calls and rate > config.executor_error_rate:
                out.append(Proposal(
                    "executor_errors", Action.PAUSE_EXECUTOR, name,
                    {"executor": name, "error_rate": f"{rate:.3f}", "calls": str(calls)},
                    f"executor {name}: {errors}/{calls} calls failed in 5 min", evidence))
            continue
        if now_ms - paused < config.executor_resume_after_s * 1000:
            continue
        if calls >= config.executor_min_calls and rate > config.executor_resume_rate:
            continue
        judged = calls >= config.executor_min_calls
        why = (f"{errors}/{calls} calls failed since the pause" if judged
               else "too few calls since the pause to judge")
        out.append(Proposal(
            "executor_errors", Action.RESUME_EXECUTOR, name,
            {"executor": name, "error_rate": f"{rate:.3f}", "calls": str(calls)},
            f"executor {name} paused {(now_ms - paused) / 1000:.0f}s: {why}",
            evidence or (f"executor:{name}@paused:{paused}",)))
    return out


def canary_breach(view: OpsView, now_ms: int,
                  config: RuleConfig = DEFAULT_CONFIG) -> list[Proposal]:
    """A canary whose metric, in the newest window since the deployment started, has
    `stat` above its threshold with at least `min_count` points: propose a rollback."""
    out = []
    for c in sorted(view.canaries.values(), key=lambda c: c.deployment_id):
        aggs = view.latest(c.metric, c.window_size, now_ms, dict(c.dims), since=c.started_at)
        if sum(a.count for a in aggs) < c.min_count:
            continue  # no data is inconclusive, never a breach
        worst = max(_stat(a, c.stat) for a in aggs)
        if worst <= c.threshold:
            continue
        out.append(Proposal(
            "canary_breach", Action.ROLLBACK, c.deployment_id,
            {"deployment_id": c.deployment_id, "metric": c.metric, "stat": c.stat,
             "value": f"{worst:g}", "threshold": f"{c.threshold:g}",
             **({"revision": c.revision} if c.revision else {})},
            f"canary {c.deployment_id}: {c.metric} {c.stat} {worst:g} > {c.threshold:g}",
            tuple(a.key for a in aggs), c.plan_id))
    return out


def canary_facts(aggregates: Iterable[Aggregate], config: RuleConfig = DEFAULT_CONFIG
                 ) -> dict[str, CanaryFacts]:
    """The canaries under analysis, from the windows of their `canary.*` metrics: one per
    plan, revision and limited metric, counted from its first window (so an earlier
    revision's windows never judge a later one)."""
    out: dict[str, CanaryFacts] = {}
    for a in aggregates:
        limit = config.canary_limits.get(a.metric)
        plan, revision = a.dim("plan_id"), a.dim("revision")
        if limit is None or not plan or not revision or a.window_size != MIN:
            continue
        key = f"{plan}@{revision}:{a.metric}"
        seen = out.get(key)
        start = a.window_start if seen is None else min(seen.started_at, a.window_start)
        out[key] = CanaryFacts(f"{plan}@{revision}", a.metric, limit, stat="mean",
                               dims={"plan_id": plan, "revision": revision},
                               window_size=MIN, min_count=config.canary_min_count,
                               started_at=start, plan_id=plan, revision=revision)
    return out


Rule = Callable[[OpsView, int, RuleConfig], list[Proposal]]

RULES: tuple[Rule, ...] = (stalled_critical_path, fix_rate_explosion, backlog_worker_target,
                           executor_errors, canary_breach)


def run_rules(view: OpsView, now_ms: int, config: RuleConfig = DEFAULT_CONFIG,
              rules: Sequence[Rule] = RULES) -> list[Proposal]:
    """Return every rule's proposals, in a stable order."""
    out = [p for rule in rules for p in rule(view, now_ms, config)]
    return sorted(out, key=lambda p: (p.rule, p.target, p.decision_id))


def _single(view: OpsView, a: str, b: str, size: int, now_ms: int
            ) -> tuple[Aggregate, Aggregate] | None:
    """The newest window of two dimensionless metrics, when both have the same one."""
    first, second = view.latest(a, size, now_ms), view.latest(b, size, now_ms)
    if len(first) != 1 or len(second) != 1 or first[0].window_start != second[0].window_start:
        return None
    return first[0], second[0]


def _stat(a: Aggregate, stat: str) -> float:
    match stat:
        case "p50":
            return a.p50
        case "p95":
            return a.p95
        case "p99":
            return a.p99
        case "mean":
            return a.mean
        case "max":
            return a.max
    raise ValueError(f"unknown canary stat {stat!r}")
