"""Carry out the rollout fold's actions and write what came of them back to the log.

Every effect answers with an event on `devline.rollouts` (or `devline.escalations`)
whose id is derived from what it answers, and ends with a `RolloutAction` audit record.
Targets and sources are idempotent, so an effect redone after a crash only repeats a
weight that is already live or a measurement the fold ignores.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, assert_never

from agents.rollout import Action, ActionKind, EventType
from agents.rollout.sources import MeasureContext
from agents.rollout.targets import DeployError, Deployment
from devline.errors import ConfigError
from streams import topics as T
from streams.rollout.config import RolloutConfig
from streams.rollout.records import ACTION, AVRO_OF, dumps, make_id

log = logging.getLogger(__name__)

# emit(topic, event_type, record, key): produce one record stamped with the stage's clock.
Emit = Callable[[str, str, dict[str, Any], str], Awaitable[None]]
# request_fix(plan, event_id, data, state, options): fix tasks for a failed canary;
# (True, outcome) when requested, (False, why not) when no file can be blamed (then a
# person gets the evidence).
RequestFix = Callable[[str, str, Mapping[str, Any], Mapping[str, Any], Mapping[str, str]],
                      Awaitable[tuple[bool, str]]]
ROLLOUTS = T.ROLLOUTS


class Effects:
    """Executes actions for the stage (everything but ARM_TIMER, which the stage keeps)."""

    def __init__(self, config: RolloutConfig, emit: Emit, clock: Callable[[], int],
                 request_fix: RequestFix | None = None) -> None:
        self.config, self.emit, self.clock = config, emit, clock
        self.request_fix = request_fix

    async def run(self, plan: str, trigger: str, actions: list[tuple[int, Action]],
                  state: Mapping[str, Any], options: Mapping[str, str]) -> None:
        """Perform `actions` (numbered within the event `trigger`) in order."""
        for index, action in actions:
            outcome = await self.one(plan, trigger, index, action, state, options)
            await self.emit(ROLLOUTS, ACTION, {
                "event_id": make_id(plan, "action", trigger, index), "plan_id": plan,
                "kind": action.kind.value, "run": action.data.get("run"),
                "data_json": dumps(action.data), "outcome": outcome, "at": self.clock()}, plan)

    async def one(self, plan: str, trigger: str, index: int, action: Action,
                  state: Mapping[str, Any], options: Mapping[str, str]) -> str:
        d = action.data
        match action.kind:
            case ActionKind.SET_WEIGHT:
                return await self._deploy(plan, options, d["run"], int(d["step"]),
                                          int(d["percent"]), None, d["revision"],
                                          d.get("stable_revision"))
            case ActionKind.ROLLBACK:
                return await self._deploy(plan, options, d["run"], int(state.get("step", 0)),
                                          0, int(d["rollback"]), d["revision"],
                                          d.get("stable_revision"))
            case ActionKind.MEASURE:
                return await self._measure(plan, d, state, options)
            case ActionKind.COMPARE:
                return await self._compare(plan, d, state, options)
            case ActionKind.ESCALATE:
                return await self._escalate(plan, trigger, index, "rollout", str(d["reason"]),
                                            d.get("evidence"))
            case ActionKind.FIX_TASKS:
                requested, why = False, "no fix loop wired"
                if self.request_fix is not None:
                    requested, why = await self.request_fix(
                        plan, make_id(plan, "fix", trigger, index), d, state, options)
                if requested:
                    return why
                return await self._escalate(plan, trigger, index, "rollout_failed",
                                            f"{d['reason']} (no fix tasks: {why})",
                                            d.get("evidence"))
            case ActionKind.REJECTED:
                log.warning("rollout %s: %s by %s rejected: %s", plan, d.get("control"),
                            d.get("by"), d.get("reason"))
                return "rejected"
            case ActionKind.DONE:
                log.info("rollout %s: revision %s is the new stable", plan, d.get("revision"))
                return "done"
            case ActionKind.ARM_TIMER:
                return f"armed {d['kind']} at {d['due_at']}"
            case _:
                assert_never(action.kind)

    async def _deploy(self, plan: str, options: Mapping[str, str], run: str, step: int,
                      weight: int, rollback: int | None, revision: str,
                      stable: str | None) -> str:
        record: dict[str, Any] = {"plan_id": plan, "run": run, "step": step, "weight": weight,
                                  "rollback": rollback}
        try:
            target = self.config.target(options.get("rollout.target"))
            record["target"] = target.name
            await target.set_weight(Deployment(plan, revision, weight, stable, options))
        except (DeployError, ConfigError) as exc:
            kind = AVRO_OF[EventType.DEPLOY_FAILED]
            record.update(reason=str(exc))
            outcome = f"failed: {exc}"
        else:
            kind = AVRO_OF[EventType.DEPLOY_DONE]
            outcome = "done"
        record.update(event_id=make_id(plan, kind, run, step, weight, rollback), at=self.clock())
        await self.emit(ROLLOUTS, kind, record, plan)
        return outcome

    def _ctx(self, plan: str, state: Mapping[str, Any], options: Mapping[str, str],
             percent: int) -> MeasureContext:
        return MeasureContext(plan, str(state.get("revision")), state.get("stable_revision"),
                              percent, options)

    async def _measure(self, plan: str, d: Mapping[str, Any], state: Mapping[str, Any],
                       options: Mapping[str, str]) -> str:
        source = self.config.source(options.get("rollout.source"))
        ctx = self._ctx(plan, state, options, int(d["percent"]))
        taken = []
        for metric in d["metrics"]:
            m = await source.measure(metric, ctx)
            kind = AVRO_OF[EventType.ANALYSIS_MEASURED]
            await self.emit(ROLLOUTS, kind, {
                "event_id": make_id(plan, kind, d["run"], d["step"], d["round"], metric),
                "plan_id": plan, "run": d["run"], "step": int(d["step"]),
                "round": int(d["round"]), "metric": metric, "measurement": m.to_dict(),
                "source": source.name, "at": self.clock()}, plan)
            if m.value is not None and not m.error:  # the ops agent's canary windows
                await self.emit(T.METRICS, "MetricPoint", {
                    "source": "rollout", "name": f"canary.{metric}", "value": float(m.value),
                    "labels": {"plan_id": plan, "revision": ctx.revision},
                    "at": self.clock()}, plan)
            taken.append(f"{metric}={m.value} (n={m.samples}{', ' + m.error if m.error else ''})")
        return "; ".join(taken)

    async def _compare(self, plan: str, d: Mapping[str, Any], state: Mapping[str, Any],
                       options: Mapping[str, str]) -> str:
        source = self.config.source(options.get("rollout.source"))
        ctx = self._ctx(plan, state, options, 0)
        samples = []
        for metric in d["metrics"]:
            got = await source.samples(metric, ctx)
            samples.append({"metric": metric, "canary": got.get("canary", []),
                            "stable": got.get("stable", [])})
        kind = AVRO_OF[EventType.COMPARISON_MEASURED]
        await self.emit(ROLLOUTS, kind, {
            "event_id": make_id(plan, kind, d["run"], d["step"]), "plan_id": plan,
            "run": d["run"], "step": int(d["step"]), "samples": samples, "at": self.clock()},
            plan)
        return f"compared {len(samples)} metric(s)"

    async def _escalate(self, plan: str, trigger: str, index: int, kind: str, reason: str,
                        evidence: Any) -> str:
        event_id = make_id(plan, "escalation", trigger, index)
        await self.emit(T.ESCALATIONS, "Escalation", {
            "event_id": event_id, "plan_id": plan, "task_id": None, "kind": kind,
            "reason": reason, "attempts": 0, "errors": [],
            "last_output": dumps(evidence), "at": self.clock()}, plan)
        return f"escalation {event_id}"

