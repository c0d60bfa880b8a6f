"""Rollout events as Avro records and back: names, deterministic ids, conversions.

The fold speaks the machine's event types (`DeployDone`, ...) with `id` and `plan`; the
log speaks Avro records named `Rollout*` with `event_id` and `plan_id`. Events the stage
derives get ids from what they answer, so an effect redone after a crash writes the same
id and the fold ignores the copy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from agents.rollout import EventType

AVRO_OF: dict[EventType, str] = {
    EventType.ROLLOUT_STARTED: "RolloutStarted",
    EventType.DEPLOY_DONE: "RolloutDeployDone",
    EventType.DEPLOY_FAILED: "RolloutDeployFailed",
    EventType.ANALYSIS_MEASURED: "RolloutAnalysisMeasured",
    EventType.COMPARISON_MEASURED: "RolloutComparisonMeasured",
    EventType.TIMER_FIRED: "RolloutTimerFired",
    EventType.ROLLOUT_CONTROL: "RolloutControl",
    EventType.ROLLOUT_SUPERSEDED: "RolloutSuperseded",
}
MACHINE_OF = {avro: machine for machine, avro in AVRO_OF.items()}
ACTION = "RolloutAction"
# Plan options the stage reads itself; every other `rollout.*` option goes to parse_spec,
# which refuses unknown ones (a typo must not fall back to the defaults).
EDGE_OPTIONS = frozenset({"rollout", "rollout.revision", "rollout.stable_revision",
                          "rollout.target", "rollout.source", "rollout.fix_max_files"})
EDGE_PREFIXES = ("rollout.sim.",)


def make_id(*parts: object) -> str:
    """A deterministic event id from what the event answers."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def to_event(avro_type: str, value: Mapping[str, Any]) -> tuple[EventType, dict[str, Any]] | None:
    """The machine's view of a rollout record; None for records the fold does not read."""
    kind = MACHINE_OF.get(avro_type)
    if kind is None:
        return None
    event = {k: v for k, v in value.items() if k not in ("event_id", "plan_id")}
    event.update(id=value["event_id"], plan=value["plan_id"])
    if kind is EventType.ROLLOUT_STARTED:
        event["spec"] = json.loads(value["spec_json"])
    elif kind is EventType.COMPARISON_MEASURED:
        event["samples"] = {s["metric"]: {"canary": list(s["canary"]),
                                          "stable": list(s["stable"])}
                            for s in value["samples"]}
    return kind, event


def rollout_options(options: Mapping[str, str]) -> dict[str, str]:
    """The `rollout*` options of a plan."""
    return {k: v for k, v in options.items() if k == "rollout" or k.startswith("rollout.")}


def spec_options(options: Mapping[str, str]) -> dict[str, str]:
    """The options `parse_spec` reads (the stage's own removed)."""
    return {k: v for k, v in rollout_options(options).items()
            if k not in EDGE_OPTIONS and not k.startswith(EDGE_PREFIXES)}


def wants_rollout(options: Mapping[str, str]) -> bool:
    """A plan asks for a rollout with `rollout: on` or any `rollout.*` option."""
    flag = options.get("rollout", "").strip().lower()
    if flag in ("off", "false", "no", "0"):
        return False
    return flag in ("on", "true", "yes", "1") or any(k.startswith("rollout.") for k in options)


def dumps(data: Any) -> str:
    """Compact, sorted JSON (actions, evidence)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
