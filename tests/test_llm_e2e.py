"""An OpenAI-compatible endpoint (a fake on a real socket) through the whole pipeline:
429 with Retry-After is retried after the pause, the spending budget stops dispatch."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from devline.settings import Settings
from streams import topics as T
from tests.fake_llm import FakeLLM, Reply
from tests.harness import events, plan_events, running_pipeline, submit, wait_for


def llm_settings(topics: Settings, tmp_path: Path, base_url: str) -> Settings:
    config = tmp_path / "executors.yaml"
    config.write_text(yaml.safe_dump({"http": {"base_url": base_url, "model": "coder",
                                               "api_key": "sk-test", "timeout_s": 10}}))
    return topics.model_copy(update={"executor_config": config})


def test_rate_limited_call_waits_for_retry_after_then_writes_the_file(
    topics: Settings, tmp_path: Path
) -> None:
    with FakeLLM(default=Reply.ok("```python\ndef area(r):\n    return 3.14 * r * r\n```")) as llm:
        llm.rate_limit_first(1, retry_after="2")
        settings = llm_settings(topics, tmp_path, llm.base_url)
        with running_pipeline(settings, workers=1):
            plan_id = submit(settings, {"project": "geo", "name": "geo", "options":
                                        {"executor": "http"}, "files": [
                {"path": "geo/area.py", "description": "area of a circle"}]})
            kind, _ = wait_for(settings, plan_id, {"PlanCompleted", "TaskDeadLettered"})
            evs = plan_events(settings, plan_id)
        assert kind == "PlanCompleted"
        failed = [v for _, et, v in evs if et == "TaskFailed"]
        assert [f["error_type"] for f in failed] == ["rate_limited"]
        assert failed[0]["retry_after_s"] == 2.0
        retry = next(v for _, et, v in evs if et == "TaskRetryScheduled")
        assert retry["delay_ms"] >= 2000  # Retry-After is a floor for the backoff
        second = [v for _, et, v in evs if et == "TaskDispatched"][1]
        assert second["dispatched_at"] >= failed[0]["finished_at"] + 2000
        out = (settings.workspace / "geo" / "geo" / "area.py").read_text()
        assert "return 3.14 * r * r" in out
        completed = next(v for _, et, v in evs if et == "TaskCompleted")
        assert completed["tokens"] == 150
        assert llm.requests[-1].headers["Authorization"] == "Bearer sk-test"


def test_spending_budget_stops_dispatch_and_escalates(topics: Settings, tmp_path: Path) -> None:
    with FakeLLM(default=Reply.ok("```python\nx = 1\n```")) as llm:
        settings = llm_settings(topics, tmp_path, llm.base_url)
        files = [{"path": f"m{i}.py", "description": "module"} for i in range(6)]
        with running_pipeline(settings, workers=1):
            plan_id = submit(settings, {"project": "b", "name": "budget", "files": files,
                                        "options": {"executor": "http",
                                                    "budget.tokens": "300"}})
            deadline = time.monotonic() + 60
            escalations: list = []
            while time.monotonic() < deadline and not escalations:
                escalations = [v for _, et, v in events(settings, T.ESCALATIONS, idle=0.3)
                               if v["plan_id"] == plan_id]
                time.sleep(0.3)
            time.sleep(2.0)  # dispatch must stay stopped
            evs = plan_events(settings, plan_id)
    assert escalations and escalations[0]["kind"] == "budget"
    assert "token budget used up" in escalations[0]["reason"]
    done = [v for _, et, v in evs if et == "TaskCompleted"]
    assert len(done) == 2  # 150 tokens each: the budget of 300 is spent after two
    assert not any(et == "PlanCompleted" for _, et, _ in evs)
    assert len([1 for _, et, _ in evs if et == "TaskDispatched"]) == 2
    assert len(llm.requests) == 2
