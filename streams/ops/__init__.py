"""The ops agent stage (`devline ops`): window aggregates, plan events and heartbeats in,
`OpsDecision` events out. The rules and the governor are `agents.ops`; here is what keeps
their view up to date (`facts`), the tick that runs them (`core`) and the Kafka edge
(`stage`)."""

from streams.ops.core import OpsConfig, OpsCore
from streams.ops.facts import Facts
from streams.ops.records import decision_of, governor_state
from streams.ops.stage import run_ops

__all__ = ["Facts", "OpsConfig", "OpsCore", "decision_of", "governor_state", "run_ops"]
