"""`devline dlq`: redrive decisions on their own, then list/show/redrive against a real broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from agents.scheduling import fold as F
from devline.cli.dlq import hexdump
from devline.settings import Settings
from devline.supervisor import child_env
from streams import topics as T
from streams.deadletters import Letter, decide, decide_all, redrive_reason
from tests.harness import ROOT, plan_events, raw_records, running_pipeline, submit, wait_for

# -- decisions (pure) ---------------------------------------------------------------------


def task_letter(offset: int, attempt: int = 3) -> Letter:
    return Letter(0, offset, 1_000, b"a.py", b"", (
        ("dlq-reason", b"attempts exhausted"), ("dlq-source-topic", b"devline.events"),
        ("dlq-source-partition", b"-1"), ("dlq-source-offset", b"-1"),
        ("dlq-attempt", str(attempt).encode()), ("plan-id", b"p1"), ("task-id", b"a.py")))


def poison_letter(offset: int) -> Letter:
    return Letter(0, offset, 1_000, b"k", b"junk", (
        ("dlq-reason", b"undecodable"), ("dlq-source-topic", b"devline.plans"),
        ("dlq-source-partition", b"2"), ("dlq-source-offset", b"7")))


def plan_with(status: str, attempt: int = 3) -> dict[str, F.PlanState]:
    header = {"plan_id": "p1", "status": F.STALLED, "dead": 1 if status == F.DEAD else 0}
    task = {"status": status, "attempt": attempt, "spec": {"path": "a.py"}}
    return {"p1": F.PlanState(header, {"a.py": task})}


def test_a_dead_task_gets_a_redrive_request_naming_its_letter() -> None:
    d = decide(task_letter(5), {}, plan_with(F.DEAD), now=42)
    assert d.action == "task" and "as attempt 4" in d.detail
    # A request, not the decision: the processor checks it against the plan's state.
    assert d.event["attempt"] == 3 and d.event["dlq_offset"] == 5 and d.event["at"] == 42
    assert "@" in d.event["requested_by"]
    assert redrive_reason(5) == "redrive: from DLQ offset 5 by devline dlq"
    assert redrive_reason(5).startswith(F.REDRIVE)


def test_redrives_are_skipped_when_done_not_dead_stale_or_unknown() -> None:
    assert "already redriven" in decide(task_letter(5), {5: "x"}, plan_with(F.DEAD), 0).detail
    assert "not dead" in decide(task_letter(5), {}, plan_with(F.RETRY_WAIT, 4), 0).detail
    assert "stale" in decide(task_letter(5, attempt=3), {}, plan_with(F.DEAD, 6), 0).detail
    assert "no task" in decide(task_letter(5), {}, {}, 0).detail
    assert decide(poison_letter(6), {6: "x"}, {}, 0).action == "skip"
    assert decide(poison_letter(6), {}, {}, 0).action == "republish"


def test_a_batch_revives_a_task_once() -> None:
    states = plan_with(F.DEAD)
    first, again = decide_all([task_letter(5), task_letter(5)], {}, states, 0)
    assert first.action == "task" and again.action == "skip"
    assert states["p1"].tasks["a.py"]["status"] == F.RETRY_WAIT


def test_hexdump_is_bounded() -> None:
    dump = hexdump(bytes(range(256)) * 8, limit=32)
    assert dump.splitlines()[0].startswith("00000000  00 01 02")
    assert dump.endswith("... 2016 more bytes")
    assert hexdump(b"") == "(empty)"


# -- end to end ---------------------------------------------------------------------------


def redrive_plan() -> dict[str, Any]:
    # Attempts 1-3 fail, so the task is dead-lettered; a redrive runs attempt 4, which passes.
    return {"project": "redrive", "name": "redrive", "files": [
        {"path": "flaky.py", "content": "X = 1\n",
         "simulate": {"fail_first": 3, "fail_error": "model overloaded (request 7)"}},
        {"path": "after.py", "content": "from flaky import X\n"},
    ]}


def dlq(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devline", "dlq", *args], cwd=ROOT,
                          env=child_env(settings), capture_output=True, text=True, timeout=60)


def wait_for_letters(settings: Settings, n: int, timeout: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        letters = raw_records(settings, T.DLQ, idle=0.3)
        if len(letters) >= n:
            return letters
        time.sleep(0.3)
    raise AssertionError(f"fewer than {n} dead letters within {timeout}s")


def send_poison(settings: Settings) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic(T.PLANS), value=b"not avro at all",
                                         key=b"poison", headers=[("origin", b"test")])
        finally:
            await producer.stop()

    asyncio.run(go())


def test_redrive_from_the_cli_revives_a_dead_task_and_republishes_poison(
    topics: Settings,
) -> None:
    settings = topics
    with running_pipeline(settings, workers=2):
        send_poison(settings)
        plan_id = submit(settings, redrive_plan())
        wait_for(settings, plan_id, {"TaskDeadLettered"}, timeout=40)
        wait_for_letters(settings, 2)

        listed = dlq(settings, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        task_row = next(r for r in rows if r["plan_id"] == plan_id)
        poison_row = next(r for r in rows if r["task_id"] is None)
        assert task_row["task_id"] == "flaky.py" and task_row["attempt"] == 3
        assert task_row["fingerprint"] and "attempts exhausted" in task_row["reason"]
        assert poison_row["source_topic"] == settings.topic(T.PLANS)
        assert task_row["redriven"] is None and poison_row["redriven"] is None
        offsets = [str(task_row["offset"]), str(poison_row["offset"])]

        first = dlq(settings, "redrive", *offsets)
        assert first.returncode == 0, first.stderr
        assert (f"offset {offsets[0]}: redriven - asked the processor to revive task "
                f"{plan_id}/flaky.py as attempt 4") in first.stdout
        assert f"offset {offsets[1]}: redriven - republished to" in first.stdout

        _, completed = wait_for(settings, plan_id, {"PlanCompleted"}, timeout=30)
        assert completed["failed"] == 0

        second = dlq(settings, "redrive", *offsets)
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("skipped - already redriven") == 2, second.stdout
        # The republished poison was read again, and dead-lettered again from its new offset.
        letters = wait_for_letters(settings, 3)
        shown = json.loads(dlq(settings, "show", offsets[1], "--json").stdout)
        relisted = {r["offset"]: r for r in json.loads(dlq(settings, "list", "--json").stdout)}
        evs = plan_events(settings, plan_id)
        plans = raw_records(settings, T.PLANS)

    assert shown["type"] is None and bytes.fromhex(shown["raw_hex"]) == b"not avro at all"
    back = [r for r in plans if dict(r.headers).get("redrive-of")]
    assert len(back) == 1 and back[0].value == b"not avro at all" and back[0].key == b"poison"
    assert relisted[task_row["offset"]]["redriven"] and relisted[poison_row["offset"]]["redriven"]
    again = [r for r in letters if r.offset not in (task_row["offset"], poison_row["offset"])]
    assert len(again) == 1 and again[0].value == b"not avro at all"
    assert dict(again[0].headers)["dlq-source-offset"] != str(poison_row["source_offset"]).encode()

    flaky = [(et, v) for _, et, v in evs if v.get("task_id") == "flaky.py"]
    redrives = [v for et, v in flaky
                if et == "TaskRetryScheduled" and v["reason"].startswith(F.REDRIVE)]
    assert len(redrives) == 1 and redrives[0]["attempt"] == 4
    assert redrives[0]["reason"].startswith(f"redrive: from DLQ offset {task_row['offset']} by ")
    requests = [v for et, v in flaky if et == "TaskRedriveRequested"]
    assert len(requests) == 1 and requests[0]["dlq_offset"] == task_row["offset"]
    assert [v["attempt"] for et, v in flaky if et == "TaskDispatched"] == [1, 2, 3, 4]
    done = [v for et, v in flaky if et == "TaskCompleted"]
    assert len(done) == 1 and done[0]["attempt"] == 4
    after = [v for _, et, v in evs if v.get("task_id") == "after.py" and et == "TaskDispatched"]
    assert len(after) == 1 and after[0]["dispatched_at"] >= done[0]["finished_at"]
