"""Failures through the real broker: retries with backoff, dead letters, poison records."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from tests.harness import plan_events, raw_records, running_pipeline, submit, wait_for


def flaky_plan() -> dict:
    return {"project": "flaky", "name": "flaky", "files": [
        {"path": "base.py", "content": "X = 1\n"},
        {"path": "flaky.py", "content": "from base import X\n",
         "simulate": {"fail_first": 2, "fail_error": "model overloaded (request 123)"}},
        {"path": "doomed.py", "content": "import base\n",
         "simulate": {"fail_first": 99, "fail_error": "tool crashed at 0x7f3a"}},
        {"path": "after_doomed.py", "content": "import doomed\n"},
    ]}


def test_retry_then_success_and_dead_letter_with_escalation(topics: Settings) -> None:
    settings = topics
    with running_pipeline(settings, workers=2):
        plan_id = submit(settings, flaky_plan())
        wait_for(settings, plan_id, {"TaskDeadLettered"})
        wait_for_completion_of(settings, plan_id, "flaky.py")
        evs = plan_events(settings, plan_id)
        dlq = raw_records(settings, T.DLQ)
        escalations = [r for r in raw_records(settings, T.ESCALATIONS)]

    flaky = [(r, et, v) for r, et, v in evs if v.get("task_id") == "flaky.py"]
    attempts = [v["attempt"] for _, et, v in flaky if et == "TaskDispatched"]
    assert attempts == [1, 2, 3]
    done = [v for _, et, v in flaky if et == "TaskCompleted"]
    assert len(done) == 1 and done[0]["attempt"] == 3
    # The backoff schedule is visible in event timestamps: each retry waits its delay.
    scheduled = [v for _, et, v in flaky if et == "TaskRetryScheduled"]
    failed_at = [v["finished_at"] for _, et, v in flaky if et == "TaskFailed"]
    dispatched_at = [v["dispatched_at"] for _, et, v in flaky if et == "TaskDispatched"]
    assert [s["attempt"] for s in scheduled] == [2, 3]
    for s, fail, again in zip(scheduled, failed_at, dispatched_at[1:], strict=True):
        assert again >= s["due_at"] >= fail
        assert 0 <= s["delay_ms"] <= 60_000

    doomed = [(et, v) for _, et, v in evs if v.get("task_id") == "doomed.py"]
    assert [v["attempt"] for et, v in doomed if et == "TaskFailed"] == [1, 2, 3]
    assert [et for et, _ in doomed].count("TaskDeadLettered") == 1
    letters = [r for r in dlq if dict(r.headers).get("plan-id", b"").decode() == plan_id
               or r.key == b"doomed.py"]
    assert len(letters) == 1
    headers = {k: v.decode() for k, v in letters[0].headers}
    assert headers["dlq-attempt"] == "3" and headers["dlq-fingerprint"]
    assert "attempts exhausted" in headers["dlq-reason"]
    assert len([r for r in escalations if r.key == plan_id.encode()]) == 1
    # The dependent of the dead task is held, not lost and not run.
    assert not any(v.get("task_id") == "after_doomed.py" and et == "TaskDispatched"
                   for _, et, v in evs)


def wait_for_completion_of(settings: Settings, plan_id: str, path: str) -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(et == "TaskCompleted" and v["path"] == path
               for _, et, v in plan_events(settings, plan_id)):
            return
        time.sleep(0.3)
    raise AssertionError(f"{path} never completed")


def test_garbage_on_every_input_topic_is_dead_lettered_and_the_plan_completes(
    topics: Settings,
) -> None:
    settings = topics
    garbage = [b"", b"\x00\x00\x00\x00\x01garbage", b"\xc3\x01" + b"\xff" * 8 + b"x",
               b"not avro at all"]

    # Decodable but impossible: a dependency on a task the plan does not have.
    broken = Codec().encode("PlanAccepted", {
        "plan_id": "broken", "project": "x", "name": "x", "critical_path": [], "levels": [],
        "accepted_at": 0, "tasks": [{"task_id": "a.py", "path": "a.py", "depends_on": ["nope"],
                                     "cost": 1.0, "priority": 1.0, "level": 0,
                                     "executor": "demo"}]})

    async def poison() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
        await producer.start()
        try:
            for topic in (T.PLANS, T.EVENTS, T.WORKERS, T.WORK_DEV):
                for i, value in enumerate(garbage):
                    await producer.send_and_wait(settings.topic(topic), value=value,
                                                 key=f"poison-{i}".encode())
            await producer.send_and_wait(settings.topic(T.EVENTS), value=broken, key=b"broken")
        finally:
            await producer.stop()

    with running_pipeline(settings, workers=2):
        asyncio.run(poison())
        plan_id = submit(settings, {"project": "p", "name": "after poison", "files": [
            {"path": "a.py", "content": "A = 1\n"},
            {"path": "b.py", "content": "from a import A\n"}]})
        kind, _ = wait_for(settings, plan_id, {"PlanCompleted", "PlanRejected"})
        assert kind == "PlanCompleted"
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            dlq = raw_records(settings, T.DLQ, idle=0.5)
            if len(dlq) >= 17:
                break
            time.sleep(0.5)
    sources = {}
    for r in dlq:
        h = {k: v.decode() for k, v in r.headers}
        sources.setdefault(h["dlq-source-topic"], []).append(h)
        assert h["dlq-reason"] and h["dlq-source-offset"] != "-1"
    for topic in (T.PLANS, T.WORKERS, T.WORK_DEV):
        assert len(sources.get(settings.topic(topic), [])) == len(garbage), topic
    from_events = sources[settings.topic(T.EVENTS)]
    assert len(from_events) == len(garbage) + 1
    assert any(h["dlq-reason"].startswith("invalid PlanAccepted: tasks[0] (a.py) depends on "
                                          "'nope'") for h in from_events)
