"""Claim checks end to end: a plan too big for a record, briefs and outputs by hash, on the
real broker. What reaches the disk is what the plan asked for."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest

from agents.planning import plan_record
from devline.settings import Settings
from streams import claims
from streams import topics as T
from streams.client import publish_plan
from tests.harness import events, running_pipeline, wait_for

BIG_OUTPUT = "# generated\n" + "X = 1\n" * 2000  # > CONTENT_INLINE_MAX_BYTES


def plan(plan_id: str) -> dict[str, Any]:
    return plan_record({"plan_id": plan_id, "project": "claims", "name": plan_id, "files": [
        {"path": "pkg/base.py", "description": "base " + "b" * 2000, "content": BIG_OUTPUT},
        {"path": "pkg/use.py", "description": "uses base",
         "content": "from pkg.base import X\nY = X\n"},
        {"path": "pkg/small.py", "description": "small", "content": "Z = 3\n"},
    ]})


def test_a_plan_sent_by_reference_runs_with_briefs_and_outputs_by_hash(
        topics: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = topics
    record = plan("claims-1")
    monkeypatch.setattr(claims, "PLAN_INLINE_MAX_BYTES", 100)  # force the by-reference path
    with running_pipeline(settings, workers=1):
        asyncio.run(publish_plan(settings, record))
        kind, _ = wait_for(settings, "claims-1", {"PlanCompleted", "PlanRejected"}, 90)
        assert kind == "PlanCompleted"
        wanted = {f["path"]: f["content"] for f in record["files"]}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the sink is its own stage: give it a moment
            on_disk = {p: (settings.workspace / "claims" / p) for p in wanted}
            if all(f.exists() for f in on_disk.values()):
                break
            time.sleep(0.2)
    for path, content in wanted.items():
        assert (settings.workspace / "claims" / path).read_text() == content

    submitted = [v for _, et, v in events(settings, T.PLANS) if et == "PlanSubmitted"]
    assert submitted[0]["files"] == [] and submitted[0]["files_ref"]
    log = {et: v for _, et, v in events(settings) if v.get("plan_id") == "claims-1"
           and et in ("PlanAccepted",)}
    specs = {t["path"]: t for t in log["PlanAccepted"]["tasks"]}
    assert specs["pkg/base.py"]["brief"] and specs["pkg/base.py"]["description"] == ""
    assert specs["pkg/base.py"]["content"] is None
    assert specs["pkg/small.py"]["brief"] is None and specs["pkg/small.py"]["content"]
    done = {v["path"]: v for _, et, v in events(settings) if et == "TaskCompleted"}
    assert done["pkg/base.py"]["content"] is None  # too big to travel inline
    assert done["pkg/base.py"]["content_hash"] == hashlib.sha256(BIG_OUTPUT.encode()).hexdigest()
    assert done["pkg/small.py"]["content"] == "Z = 3\n"
    items = {v["path"]: v for _, et, v in events(settings, T.WORK_DEV) if et == "WorkItem"}
    (dep,) = items["pkg/use.py"]["context"]
    assert dep["path"] == "pkg/base.py" and dep["content"] is None
    assert dep["content_hash"] == done["pkg/base.py"]["content_hash"]
    assert items["pkg/base.py"]["brief"] == specs["pkg/base.py"]["brief"]


def test_a_reference_the_processor_cannot_read_is_rejected_naming_the_store(
        topics: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    settings = topics
    monkeypatch.setattr(claims, "PLAN_INLINE_MAX_BYTES", 100)
    elsewhere = settings.updated(artifact_dir=tmp_path / "another-store")
    with running_pipeline(settings, workers=1):
        asyncio.run(publish_plan(elsewhere, plan("claims-2")))
        kind, ev = wait_for(settings, "claims-2", {"PlanAccepted", "PlanRejected"}, 60)
    assert kind == "PlanRejected"
    assert "not in the artifact store" in ev["reason"] and ev["field"] == "files_ref"
