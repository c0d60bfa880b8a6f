"""Integration tests end to end on the real broker: once every file is verified, the plan's
suite runs sharded over two test workers; a real failure is attributed to the module it
happens in, which gets a fix task with the failing test as evidence; the failed test runs
again, then the full suite; a flaky test is reported and never gates."""

from __future__ import annotations

import time
from typing import Any

from agents.replay.events import PlanEvent, numbered
from agents.replay.verify import verify
from agents.scheduling import integration as I
from devline.settings import Settings
from streams import topics as T
from tests.harness import events, plan_events, running_pipeline, submit, wait_for

BUGGY = "def add(a, b):\n    return [a, b][2]\n"   # passes ruff; fails at run time
FIXED = "def add(a, b):\n    return a + b\n"
FLAKY = '''import pathlib


def test_sometimes():
    marker = pathlib.Path(".flaky-marker")
    if not marker.exists():  # fails the first time in each sandbox, passes when re-run
        marker.write_text("seen")
        raise AssertionError("first run in this sandbox")
'''


def plan_file(path: str, content: str, depends: list[str] | None = None,
              **simulate: Any) -> dict[str, Any]:
    return {"path": path, "content": content, "depends_on": depends or [],
            "simulate": {"duration_s": 0.05, **simulate}}


def plan() -> dict[str, Any]:
    text_tests = "".join(f"\n\ndef test_shout_{i}():\n    assert shout('a{i}') == 'A{i}'\n"
                         for i in range(4))
    return {
        "project": "integ", "name": "integration",
        # Per-file checks only parse here: the bug in ops.py is one only a test finds.
        "options": {"executor": "demo", "qa": "syntax"},
        "files": [
            plan_file("calc/__init__.py", ""),
            plan_file("calc/ops.py", BUGGY, fixed_content=FIXED),
            plan_file("calc/text.py", "def shout(s):\n    return s.upper()\n"),
            plan_file("tests/test_ops.py", "from calc.ops import add\n\n\ndef test_add():\n"
                      "    assert add(1, 2) == 3\n", ["calc/ops.py"]),
            plan_file("tests/test_text.py", "from calc.text import shout\n" + text_tests,
                      ["calc/text.py"]),
            plan_file("tests/test_flaky.py", FLAKY),
        ],
    }


def test_a_failing_test_gets_its_module_fixed_and_the_suite_passes(topics: Settings) -> None:
    settings = topics
    with running_pipeline(settings, workers=2, test_workers=2):
        plan_id = submit(settings, plan())
        kind, done = wait_for(settings, plan_id, {"PlanCompleted", "PlanRejected"},
                              timeout=150)
        assert kind == "PlanCompleted", done
        evs = plan_events(settings, plan_id)
    runs = [(r.offset, v) for r, k, v in evs if k == "IntegrationStarted"]
    results = [(r.offset, v) for r, k, v in evs if k == "IntegrationResult"]
    # Round 1: the whole suite (6 tests) on two shards, run by two different testers.
    assert [(v["round"], v["scope"]) for _, v in runs] == [(1, "full"), (2, "failed"),
                                                          (3, "full")]
    first = runs[0][1]
    assert first["tests_total"] == 6 and len(first["shards"]) == 2
    assert all(s["tests"] for s in first["shards"])
    round1 = [v for _, v in results if v["run_id"] == first["run_id"]]
    assert len(round1) == 2 and len({v["worker_id"] for v in round1}) == 2
    failures = [f for v in round1 for f in v["failures"]]
    assert [f["test_id"] for f in failures] == ["tests/test_ops.py::test_add"]
    assert failures[0]["files"][0] == "calc/ops.py"  # where the IndexError happened
    assert "IndexError" in failures[0]["output"]
    flaky = {t for _, v in results for t in v["flaky_tests"]}
    assert flaky == {"tests/test_flaky.py::test_sometimes"}  # reported, did not gate
    assert all(v["durations"] for v in round1)

    # The module got a fix task with the failing test as evidence; nothing else did.
    fixes = [v for _, k, v in evs if k == "TaskRetryScheduled" and v.get("kind") == "fix"]
    assert [v["path"] for v in fixes] == ["calc/ops.py"]
    work = [v for _, k, v in events(settings, T.WORK_DEV) if k == "WorkItem"
            and v["kind"] == "fix"]
    assert len(work) == 1 and work[0]["fix"]["check"] == "pytest (integration)"
    assert "tests/test_ops.py::test_add" in work[0]["fix"]["output"]
    # Round 2 ran only the failed test, round 3 everything again; both passed.
    assert runs[1][1]["tests_total"] == 1
    assert runs[1][1]["shards"][0]["tests"] == ["tests/test_ops.py::test_add"]
    last = [v for _, v in results if v["run_id"] == runs[2][1]["run_id"]]
    assert last and all(not v["failures"] for v in last)
    # Replay re-derives the runs and the fix decision from the log, and names a changed run.
    log = numbered([(r.partition, r.offset, r.timestamp, k, v) for r, k, v in evs])
    verified = verify(log)
    assert verified.agree, verified.first
    assert verified.checked["integration"] == 3 and verified.checked["retry"] >= 1
    rerun = next(e for e in log if e.event_type == "IntegrationStarted"
                 and e.value["scope"] == "failed")
    shards = [{**rerun.value["shards"][0], "tests": ["tests/test_ops.py::test_sub"]}]
    changed = {**rerun.value, "shards": shards,
               "run_id": I.run_id(plan_id, rerun.value["round"], shards)}
    wrong = verify([PlanEvent(e.seq, e.partition, e.offset, e.timestamp, e.event_type,
                              changed if e is rerun else e.value) for e in log])
    assert wrong.first is not None and wrong.first.seq == rerun.seq, wrong.first
    # The fixed file is what the sink wrote.
    target = settings.workspace / "integ" / "calc" / "ops.py"
    for _ in range(50):
        if target.exists() and target.read_text() == FIXED:
            break
        time.sleep(0.2)
    assert target.read_text() == FIXED
