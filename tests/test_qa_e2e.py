"""The quality gate end to end on the real broker: files checked as they are written, fix
tasks ahead of queued dev work, regressions reverted, no progress and the cap escalated
with the evidence, and skipped checks visible."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agents.scheduling.fixes import state_name
from devline.settings import Settings
from streams import topics as T
from streams.client import replay
from tests.harness import plan_events, raw_records, running_pipeline, submit, wait_for
from tests.test_pipeline_e2e import example_plan


def file(path: str, *, depends: list[str] | None = None, content: str | None = None,
         **simulate: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": path, "description": f"module {path}",
                             "simulate": {"duration_s": 0.2, **simulate}}
    if depends:
        entry["depends_on"] = depends
    if content is not None:
        entry["content"] = content
    return entry


def qa_plan() -> dict[str, Any]:
    return {
        "project": "qa", "name": "quality gate",
        "options": {"executor": "demo"},
        "files": [
            # On the critical path (everything waits for it), so it runs first and its fix
            # becomes ready while the independent dev files below are still queued.
            file("app/base.py", content="VALUE = 1\n", qa_fail_first=1, duration_s=0.05),
            *[file(f"app/mod{i}.py", content=f"N{i} = {i}\n") for i in range(6)],
            file("app/top.py", depends=["app/base.py"], content="from app.base import VALUE\n"
                 "TOP = VALUE + 1\n"),
            file("app/stuck.py", qa_fail_first=9, qa_defect="same"),
            file("app/never.py", qa_fail_first=9, qa_defect="varies"),
            file("app/regress.py", qa_fail_first=2, qa_defect="regress"),
            file("tests/test_top.py", depends=["app/top.py"],
                 content="from app.top import TOP\n\n\ndef test_top():\n    assert TOP == 2\n"),
            file("notes/readme.txt", content="no checker for this\n"),
            # node 20 cannot run TypeScript tests: node-test is reported skipped, not pass.
            file("web/x.test.ts", content="export const x: number = 1;\n"),
        ],
    }


def test_defective_files_are_fixed_reverted_or_escalated_with_evidence(
        topics: Settings) -> None:
    settings = topics
    with running_pipeline(settings, workers=1):
        plan_id = submit(settings, qa_plan())
        kind, dead = wait_for(settings, plan_id, {"TaskDeadLettered", "PlanRejected"})
        assert kind == "TaskDeadLettered", dead
        dead_paths: set[str] = set()
        for _ in range(120):  # both hopeless files end in the DLQ, every other is verified
            evs = plan_events(settings, plan_id)
            dead_paths = {v["path"] for _, k, v in evs if k == "TaskDeadLettered"}
            finished = {v["path"] for _, k, v in evs if k == "TaskCompleted"}
            if dead_paths == {"app/stuck.py", "app/never.py"} and len(finished) == 12:
                break
            time.sleep(0.5)
        assert dead_paths == {"app/stuck.py", "app/never.py"}
        done = {v["path"]: v for _, k, v in evs if k == "TaskCompleted"}
        assert len(done) == 12  # every other file verified

        # Verified files carry the verdict; Python files ran parse and ruff for real.
        base = done["app/base.py"]
        assert base["qa"]["passed"] and base["attempt"] == 2
        names = {c["name"]: c["status"] for c in base["qa"]["checks"]}
        assert names["parse"] == "pass" and names["ruff"] == "pass"
        # A test file's own tests ran (pytest, with its dependencies in the sandbox).
        tests = {c["name"]: c for c in done["tests/test_top.py"]["qa"]["checks"]}
        assert tests["pytest"]["status"] == "pass", tests["pytest"]
        assert done["notes/readme.txt"]["qa"]["checks"] == []
        ts = {c["name"]: c for c in done["web/x.test.ts"]["qa"]["checks"]}
        assert ts["node-test"]["status"] == "skipped" and ts["node-test"]["reason"]
        assert ts["tsc"]["status"] in ("pass", "skipped")  # skipped where npm is missing

        # The first version of base.py failed ruff (F821) with the evidence; then a fix.
        failures = [(r.offset, v) for r, k, v in evs if k == "TaskFailed"
                    and v["path"] == "app/base.py"]
        assert len(failures) == 1
        _, first = failures[0]
        assert first["error_type"] == "qa" and "F821" in (first["output"] or "")
        ruff = next(c for c in first["qa"]["checks"] if c["name"] == "ruff")
        assert ruff["status"] == "fail" and ruff["blocking"] and ruff["lines"]

        # Fix first: every dev task still queued when the fix became ready went after it.
        ready_fix = next(r.offset for r, k, v in evs if k == "TaskReady"
                         and v["path"] == "app/base.py" and v["kind"] == "fix")
        dispatches = {(v["task_id"], v["attempt"]): r.offset for r, k, v in evs
                      if k == "TaskDispatched"}
        ids = {v["path"]: v["task_id"] for _, k, v in evs if k == "TaskFailed"}
        accepted = next(v for _, k, v in evs if k == "PlanAccepted")
        by_path = {t["path"]: t["task_id"] for t in accepted["tasks"]}
        ids.update(by_path)
        fix_at = dispatches[(ids["app/base.py"], 2)]
        waiting = [p for p in (f"app/mod{i}.py" for i in range(6))
                   if dispatches[(by_path[p], 1)] > ready_fix]
        assert waiting, "no dev task was queued behind the fix; the test proves nothing"
        assert all(dispatches[(by_path[p], 1)] > fix_at for p in waiting)

        # A regression is reverted: fix 1 of regress.py is worse, fix 2 starts from v1.
        work = [v for _, k, v in _decoded(settings) if k == "WorkItem"
                and v["path"] == "app/regress.py" and v["kind"] == "fix"]
        assert len(work) == 2
        v1 = next(v["content_hash"] for _, k, v in evs if k == "TaskFailed"
                  and v["path"] == "app/regress.py" and v["attempt"] == 1)
        assert work[0]["fix"]["base_hash"] == v1 and not work[0]["fix"]["reverted"]
        assert work[1]["fix"]["base_hash"] == v1 and work[1]["fix"]["reverted"]
        assert done["app/regress.py"]["attempt"] == 3

        # Escalations: the same fingerprint twice at once; varying ones at the cap (3).
        reasons = {v["path"]: v for _, k, v in evs if k == "TaskDeadLettered"}
        assert reasons["app/stuck.py"]["reason"].startswith("no progress")
        assert reasons["app/stuck.py"]["attempts"] == 2
        assert "after 3 fix attempt(s)" in reasons["app/never.py"]["reason"]
        assert reasons["app/never.py"]["attempts"] == 4
        escalations = {v["task_id"]: v for _, k, v in _decoded(settings, T.ESCALATIONS)}
        never = escalations[by_path["app/never.py"]]
        assert never["kind"] == "qa" and "F821" in (never["last_output"] or "")
        letters = raw_records(settings, T.DLQ)
        assert len(letters) == 2

        # status shows the gate: verified, dead, QA counts with skipped checks visible.
        state = asyncio.run(replay(settings, plan_id))[plan_id]
        h = state.header
        assert h["qa_checks"] > 0 and h["qa_skipped"] >= 1 and h["fixes"] == 1 + 1 + 3 + 2
        names_by = {t["spec"]["path"]: state_name(t) for t in state.tasks.values()}
        assert names_by["app/base.py"] == "verified" and names_by["app/never.py"] == "dead"


def test_the_example_plan_passes_its_checks_and_its_tests(topics: Settings) -> None:
    settings = topics
    with running_pipeline(settings, workers=2):
        plan_id = submit(settings, example_plan())
        kind, done = wait_for(settings, plan_id, {"PlanCompleted", "PlanRejected"})
        assert kind == "PlanCompleted" and done["files"] == 9, done
        evs = plan_events(settings, plan_id)
        assert not [v for _, k, v in evs if k == "TaskFailed"]
        checks = {v["path"]: {c["name"]: c["status"] for c in v["qa"]["checks"]}
                  for _, k, v in evs if k == "TaskCompleted"}
        assert all(c.get("ruff") == "pass" for p, c in checks.items() if p.endswith(".py"))
        assert checks["tests/test_calc.py"]["pytest"] == "pass"


def _decoded(settings: Settings, topic: str = T.WORK_DEV) -> list[tuple[Any, str, Any]]:
    from tests.harness import events

    return events(settings, topic)


def test_written_release_starts_dependents_before_the_fix_and_reruns_on_a_new_interface(
        topics: Settings) -> None:
    settings = topics
    spec = {
        "project": "spec", "name": "speculative", "options": {"release": "written",
                                                              "integration": "off"},
        "files": [
            file("lib/a.py", content="def f():\n    return 1\n", qa_fail_first=1,
                 fixed_content="def f():\n    return 1\n\n\ndef g():\n    return 2\n"),
            file("lib/b.py", depends=["lib/a.py"], content="from lib.a import f\n\n\n"
                 "def h():\n    return f()\n"),
            file("lib/c.py", content="def k():\n    return 3\n", qa_fail_first=1),
            file("lib/d.py", depends=["lib/c.py"], content="from lib.c import k\n\n\n"
                 "def m():\n    return k()\n"),
        ],
    }
    with running_pipeline(settings, workers=2):
        plan_id = submit(settings, spec)
        kind, done = wait_for(settings, plan_id, {"PlanCompleted", "PlanRejected"})
        assert kind == "PlanCompleted", done
        evs = plan_events(settings, plan_id)
    offsets = {(k, v["path"], v.get("attempt"), v.get("kind")): r.offset for r, k, v in evs
               if "path" in v}
    # b and d were dispatched before the fixes of a and c completed (speculative).
    fixed_a = offsets[("TaskCompleted", "lib/a.py", 2, None)]
    fixed_c = offsets[("TaskCompleted", "lib/c.py", 2, None)]
    assert offsets[("TaskDispatched", "lib/b.py", 1, "dev")] < fixed_a
    assert offsets[("TaskDispatched", "lib/d.py", 1, "dev")] < fixed_c
    # a's fix added g(): b ran again against it; c's fix kept k(): d's first run stood.
    assert ("TaskDispatched", "lib/b.py", 2, "dev") in offsets
    assert offsets[("TaskDispatched", "lib/b.py", 2, "dev")] > fixed_a
    assert ("TaskDispatched", "lib/d.py", 2, "dev") not in offsets
    assert done["files"] == 4


def test_a_test_file_failing_in_the_module_it_imports_gets_the_module_fixed(
        topics: Settings) -> None:
    settings = topics
    spec = {
        "project": "blame", "name": "blame", "options": {"integration": "off"},
        "files": [
            file("calc/__init__.py", content=""),
            file("calc/ops.py", content="def add(a, b):\n    return [a, b][2]\n",
                 fixed_content="def add(a, b):\n    return a + b\n"),
            file("tests/test_ops.py", depends=["calc/ops.py"],
                 content="from calc.ops import add\n\n\ndef test_add():\n"
                         "    assert add(1, 2) == 3\n"),
        ],
    }
    with running_pipeline(settings, workers=2):
        plan_id = submit(settings, spec)
        kind, done = wait_for(settings, plan_id, {"PlanCompleted", "PlanRejected"})
        assert kind == "PlanCompleted", done
        evs = plan_events(settings, plan_id)
    failed = [v for _, k, v in evs if k == "TaskFailed"]
    assert [v["path"] for v in failed] == ["tests/test_ops.py"]
    pytest_check = next(c for c in failed[0]["qa"]["checks"] if c["name"] == "pytest")
    assert pytest_check["attributed"][0] == "calc/ops.py"
    fixes = [v["path"] for _, k, v in evs if k == "TaskRetryScheduled" and v.get("kind") == "fix"]
    assert fixes == ["calc/ops.py"]  # the module, not the test
    completed = {(v["path"], v["attempt"]) for _, k, v in evs if k == "TaskCompleted"}
    assert ("calc/ops.py", 2) in completed and ("tests/test_ops.py", 2) in completed
