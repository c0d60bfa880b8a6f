"""Integration tests of a verified plan, sharded over parallel test workers.

Pure core: `plan_shards` (LPT balance by recorded durations), `parse_junit`, `classify`
(flaky = failed, then passed in isolation) and `attribute` (which plan files a failure is
fixed in). One edge: `run_shard` runs a shard's tests in a pytest subprocess. No Kafka.
"""

from agents.integration.attribution import attribute, traceback_paths
from agents.integration.discovery import discover_tests, is_test_file
from agents.integration.junit import JunitError, TestOutcome, parse_junit, recorded_durations
from agents.integration.runner import ShardRun, run_shard
from agents.integration.shards import (
    Shard,
    expected_durations,
    ideal_makespan,
    makespan,
    plan_shards,
    round_robin_shards,
)
from agents.integration.verdict import classify, needs_rerun

__all__ = [
    "JunitError",
    "Shard",
    "ShardRun",
    "TestOutcome",
    "attribute",
    "classify",
    "discover_tests",
    "expected_durations",
    "ideal_makespan",
    "is_test_file",
    "makespan",
    "needs_rerun",
    "parse_junit",
    "plan_shards",
    "recorded_durations",
    "round_robin_shards",
    "run_shard",
    "traceback_paths",
]
