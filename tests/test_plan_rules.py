"""One validation for every plan, whoever produced it: the plans that used to get past it
and wedge the pipeline are refused with the field named."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from agents.planning import accept, load_plan_file, plan_record, submission_digest, validate
from agents.scheduling.events import invalid
from devline.errors import PlanError


def doc(**extra: Any) -> dict[str, Any]:
    return {"plan_id": "p1", "project": "demo", "name": "demo",
            "files": [{"path": "a.py", "content": "A = 1\n"}], **extra}


def record(**changes: Any) -> dict[str, Any]:
    """A PlanSubmitted as another producer might send it (no CLI shaping)."""
    rec = plan_record(doc())
    rec.update(changes)
    return rec


def file(**changes: Any) -> dict[str, Any]:
    f = {"path": "a.py", "language": "python", "description": "", "depends_on": [],
         "content": "A = 1\n", "cost": None, "executor": None, "simulate": None}
    f.update(changes)
    return f


@pytest.mark.parametrize(("rec", "field"), [
    (record(project="../../escaped"), "project"),
    (record(project="/abs/path"), "project"),
    (record(project="a/../../b"), "project"),
    (record(files=[file(executor="nope")]), "files[0].executor"),
    (record(files=[file(cost=-1.0)]), "files[0].cost"),
    (record(files=[file(cost=math.nan)]), "files[0].cost"),
    (record(files=[file(cost=math.inf)]), "files[0].cost"),
    (record(files=[file(simulate={"duration_s": 1e308, "fail_first": 0,
                                  "fail_error": "x", "retryable": True})]),
     "files[0].simulate.duration_s"),
    (record(files=[file(simulate={"duration_s": math.nan, "fail_first": 0,
                                  "fail_error": "x", "retryable": True})]),
     "files[0].simulate.duration_s"),
    (record(files=[file(simulate={"duration_s": 1.0, "fail_first": -2,
                                  "fail_error": "x", "retryable": True})]),
     "files[0].simulate.fail_first"),
    (record(options={"executor": "nope"}), "options.executor"),
    (record(options={"budget.tokens": "-5"}), "options.budget.tokens"),
    (record(options={"budget.cost": "nan"}), "options.budget.cost"),
    (record(files=[file(description="x" * 70_000)]), "files[0].description"),
    (record(files=[file(path="a.py"), file(path="./a.py")]), "files[1].path"),
    (record(files=[file(path="a.py", depends_on=["a.py"])]), "files[0].depends_on[0]"),
    (record(plan_id="has space"), "plan_id"),
    (record(files=[]), "files"),
    # 65 files of 60,000 characters each: every file within its limit, the plan not.
    (record(files=[file(path=f"f{i}.py", description="d" * 60_000, content="x" * 1_000_000)
                   for i in range(65)]), "files"),
])
def test_plans_the_pipeline_cannot_carry_out_are_refused(rec: dict[str, Any], field: str) -> None:
    with pytest.raises(PlanError) as caught:
        validate(rec)
    assert caught.value.field == field, str(caught.value)
    with pytest.raises(PlanError):  # the planner runs the same rules
        accept(rec)


def test_executors_must_be_configured_where_the_planner_runs() -> None:
    rec = record(files=[file(executor="command")])
    validate(rec)  # the CLI without the operator's config checks the name only
    with pytest.raises(PlanError, match="not configured on this cluster"):
        validate(rec, executors=["demo"])
    with pytest.raises(PlanError, match=r"options\.executor"):
        validate(record(options={"executor": "http"}), executors=["demo"])
    validate(rec, executors=["demo", "command"])


def test_non_utf8_yaml_is_a_plan_error_not_a_traceback(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_bytes(b"project: p\nname: \xff\xfe caf\xe9\nfiles: []\n")
    with pytest.raises(PlanError, match="not UTF-8"):
        load_plan_file(plan)


def test_the_digest_ignores_when_and_by_whom_but_not_what() -> None:
    a = plan_record(doc())
    b = plan_record({**doc(), "submitted_by": "someone else"})
    assert submission_digest(a) == submission_digest(b)
    c = plan_record({**doc(), "files": [{"path": "a.py", "content": "A = 2\n"}]})
    assert submission_digest(c) != submission_digest(a)
    assert accept(a)["digest"] == submission_digest(a)


def test_an_accepted_plan_that_cannot_be_carried_out_is_invalid_input() -> None:
    good = accept(plan_record({**doc(), "files": [
        {"path": "a.py", "content": "A = 1\n"},
        {"path": "b.py", "content": "from a import A\n"}]}))
    assert invalid("PlanAccepted", good) is None
    unknown = {**good, "tasks": [{**good["tasks"][1], "depends_on": ["zzz"]}]}
    assert "not a task of the plan" in (invalid("PlanAccepted", unknown) or "")
    a, b = good["tasks"]
    cyclic = {**good, "tasks": [{**a, "depends_on": ["b.py"]}, b]}
    assert invalid("PlanAccepted", cyclic) == "the tasks' dependencies form a cycle"
    escaping = {**good, "project": "../up"}
    assert "escapes the workspace" in (invalid("PlanAccepted", escaping) or "")
    assert invalid("TaskReady", {"attempt": 0}) is not None


def test_the_plan_size_limit_names_itself_and_a_plan_just_under_it_passes() -> None:
    from agents.planning.rules import MAX_PLAN_TEXT

    per_file = 1_000_000
    under = record(files=[file(path=f"f{i}.py", content="x" * per_file)
                          for i in range(MAX_PLAN_TEXT // per_file)])
    validate(under)
    over = record(files=[*under["files"], file(path="last.py", content="x" * per_file)])
    with pytest.raises(PlanError) as caught:
        validate(over)
    assert str(MAX_PLAN_TEXT) in str(caught.value) and "split the plan" in str(caught.value)
