"""Test workers against the real broker: two testers take shards 0 and 1 of a plan's
integration run, build each sandbox from the artifact store, tell a flaky test from a real
failure, attribute the failure to the plan module it fails in, and report one
IntegrationResult per shard; an undecodable shard goes to the DLQ and the next one runs."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from agents.integration.report import shard_error, to_rerun, verdict
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import send_raw
from streams.emit import headers_for, now_ms
from streams.tester import TestWorker
from tests.harness import events, raw_records

OPS = """\
def add(a, b):
    return a + b


def halve(n):
    half = n // 2
    assert half * 2 == n, f"{n} is odd"
    return half
"""

TEST_CALC = """\
from pathlib import Path

from calc.ops import add, halve


def test_add():
    assert add(2, 3) == 5


def test_halve_odd():
    assert halve(7) == 3


def test_flaky():
    marker = Path(__file__).with_name("ran-once")
    if not marker.exists():  # the rerun shares the sandbox, so it sees the marker
        marker.write_text("x")
        raise AssertionError("fails on its first run only")
"""

TEST_MORE = """\
import time

from calc.ops import add


def test_add_more():
    time.sleep(0.05)
    assert add(1, 1) == 2
"""

FILES = {"calc/__init__.py": "", "calc/ops.py": OPS, "tests/test_calc.py": TEST_CALC,
         "tests/test_more.py": TEST_MORE}


async def _store_plan(settings: Settings) -> str:
    store = settings.artifact_store()
    manifest = {path: await store.put(text.encode()) for path, text in FILES.items()}
    return await store.put(json.dumps({"files": manifest}, sort_keys=True).encode())


def _shard(index: int, tests: list[str], files_ref: str, shards: int = 3) -> dict[str, Any]:
    return {"event_id": f"e{index}", "plan_id": "plan-t", "run_id": "run-1", "round": 1,
            "shard": index, "shards": shards, "tests": tests, "project": "calc",
            "files_ref": files_ref, "sent_at": now_ms()}


async def _send_shard(settings: Settings, codec: Codec, record: dict[str, Any]) -> None:
    await send_raw(settings, settings.topic(T.WORK_TEST),
                   f"{record['plan_id']}/{record['run_id']}/{record['shard']}".encode(),
                   codec.encode("TestShard", record), headers_for("TestShard", record),
                   partition=record["shard"])


def _results(settings: Settings) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    for _, et, value in events(settings, idle=0.5):
        if et == "IntegrationResult":
            found.setdefault(value["shard"], []).append(value)
    return found


def test_two_testers_run_shards_and_report_verdicts(topics: Settings) -> None:
    settings = topics
    codec = Codec.from_settings(settings)

    async def go() -> tuple[list[int], list[int]]:
        files_ref = await _store_plan(settings)
        testers = [TestWorker(settings, tester_id=f"t{i}", grace_s=5.0) for i in range(2)]
        runs = [asyncio.create_task(t.run()) for t in testers]
        try:
            for _ in range(600):  # the group settles: two members, every partition owned
                owned = [p for t in testers for p in t.partitions]
                if all(t.partitions for t in testers) and sorted(owned) == list(
                        range(settings.work_partitions)):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the testers did not share the partitions in 60 s")
            owned_by = [list(t.partitions) for t in testers]
            # Poison ahead of shard 0 on its partition: dead-lettered, then shard 0 runs.
            await send_raw(settings, settings.topic(T.WORK_TEST), b"plan-t/run-1/0",
                           b"\x00garbage", [], partition=0)
            await _send_shard(settings, codec, _shard(0, [
                "tests/test_calc.py::test_add", "tests/test_calc.py::test_halve_odd",
                "tests/test_calc.py::test_flaky"], files_ref))
            shard1 = _shard(1, ["tests/test_more.py::test_add_more"], files_ref)
            await _send_shard(settings, codec, shard1)
            await _send_shard(settings, codec, shard1)  # a resent copy: not run twice
            await _send_shard(settings, codec, _shard(2, ["tests/test_more.py"], "ab" * 32))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if sum(t.ran for t in testers) >= 3 and sum(t.skipped for t in testers) >= 1:
                    break
                await asyncio.sleep(0.2)
            return owned_by[0], owned_by[1]
        finally:
            for t in testers:
                t.stop()
            await asyncio.wait_for(asyncio.gather(*runs), 60)

    first_owned, second_owned = asyncio.run(go())
    assert {0, 1} <= set(first_owned) | set(second_owned)
    assert (0 in first_owned) != (1 in first_owned)  # round robin: 0 and 1 on different testers

    results = _results(settings)
    assert sorted(results) == [0, 1, 2]
    assert len(results[1]) == 1  # the duplicate shard was dropped
    r0, r1, r2 = results[0][0], results[1][0], results[2][0]
    assert r0["worker_id"] != r1["worker_id"]

    assert not r0["passed"] and r0["error"] is None
    assert r0["tests"] == 3
    assert r0["failed_tests"] == ["tests/test_calc.py::test_halve_odd"]
    assert r0["flaky_tests"] == ["tests/test_calc.py::test_flaky"]
    (failure,) = r0["failures"]
    assert failure["files"] == ["calc/ops.py"]
    assert r0["implicated_files"] == ["calc/ops.py"]
    assert "7 is odd" in failure["message"] + failure["output"]
    assert set(r0["durations"]) == {"tests/test_calc.py::test_add",
                                    "tests/test_calc.py::test_halve_odd",
                                    "tests/test_calc.py::test_flaky"}
    assert "-m pytest" in r0["command"]
    assert r0["duration_ms"] > 0 and (r0["plan_id"], r0["run_id"], r0["round"]) == (
        "plan-t", "run-1", 1)

    assert r1["passed"] and r1["tests"] == 1 and not r1["failures"]
    assert r1["durations"]["tests/test_more.py::test_add_more"] >= 0.05

    # A manifest the store does not have: the shard's error, not invented failures.
    assert not r2["passed"] and not r2["failures"] and not r2["failed_tests"]
    assert "not in the artifact store" in r2["error"]

    dlq = raw_records(settings, T.DLQ, idle=0.5)
    assert len(dlq) == 1
    headers = dict(dlq[0].headers)
    assert headers["dlq-source-topic"] == settings.topic(T.WORK_TEST).encode()
    assert headers["dlq-source-partition"] == b"0"
    assert b"undecodable test shard" in headers["dlq-reason"]
    assert dlq[0].value == b"\x00garbage"


def test_a_shard_pytest_reports_nothing_of_is_an_error_not_failures() -> None:
    """A whole shard cut by the time limit (or never reported) is the shard's error: its
    tests are neither re-run one by one nor reported as failures."""
    from agents.integration import ShardRun, TestOutcome

    cut = [TestOutcome(f"tests/test_x.py::test_{i}", "error", 0.0,
                       "timeout: shard killed after 5 s", "collected 3 items\n...", "")
           for i in range(3)]
    run = ShardRun(outcomes=tuple(cut), duration_s=5.0, exit_code=2,
                   command=("python", "-m", "pytest"))
    assert to_rerun(run) == []
    result = verdict(run, {}, ["tests/test_x.py"])
    assert not result["passed"] and result["failures"] == [] and result["tests"] == 0
    assert result["error"] is not None and "3 of 3 test(s) did not finish" in result["error"]
    assert "collected 3 items" in result["error"]

    silent = [TestOutcome("tests/test_x.py::test_a", "error", 0.0,
                          "not reported by pytest (exit code 3)", "INTERNALERROR> boom", "")]
    run = ShardRun(outcomes=tuple(silent), duration_s=1.0, exit_code=3, command=())
    assert to_rerun(run) == []
    assert "pytest reported none of the 1 test(s) (exit code 3)" in (shard_error(run) or "")


def test_thousands_of_failures_still_fit_one_result_record() -> None:
    """A module every test imports is broken: 10,000 failures, each with a long traceback,
    share the output budget, so the IntegrationResult stays under the record limit."""
    from agents.integration import ShardRun, TestOutcome

    settings = Settings()
    trace = "calc/ops.py:3: in <module>\n" + "x" * 20_000
    broken = [TestOutcome(f"tests/test_many.py::test_{i}", "error", 0.01,
                          "ImportError: " + "y" * 5000, "", trace) for i in range(10_000)]
    run = ShardRun(outcomes=tuple(broken), duration_s=30.0, exit_code=1, command=("pytest",))
    reruns = {o.test_id: o for o in broken[:20]}
    result = verdict(run, reruns, ["calc/ops.py", "tests/test_many.py"])
    assert len(result["failures"]) == 10_000 and result["implicated_files"] == ["calc/ops.py"]
    record = {**_shard(0, [], "ab" * 32), **result, "event_id": "e", "duration_ms": 1,
              "worker_id": "t", "at": now_ms()}
    for field in ("sent_at", "files_ref", "project"):  # a shard's, not a result's
        del record[field]
    encoded = Codec.from_settings(settings).encode("IntegrationResult", record)
    assert len(encoded) < settings.max_message_bytes
