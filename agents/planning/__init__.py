"""Planning: read and validate a plan (one validation for the CLI and the planner), then
accept it (dependencies, cycles, priorities) or reject it with the reason."""

from agents.planning.accept import accept, estimate_cost, reject
from agents.planning.load import load_plan_file, plan_record
from agents.planning.rules import (
    EXECUTORS,
    MAX_CONTENT,
    MAX_FILES,
    safe_relative,
    submission_digest,
    validate,
)

__all__ = ["EXECUTORS", "MAX_CONTENT", "MAX_FILES", "accept", "estimate_cost", "load_plan_file",
           "plan_record", "reject", "safe_relative", "submission_digest", "validate"]
