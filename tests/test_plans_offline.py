"""Records produced while no processor runs, to partitions the processor group has never
committed, are read when a processor starts: a plan submitted then is planned, and an
event on such a partition of devline.events is folded.

Faust lost them in most start-ups that read table changelogs (`FromStartConsumer` in
streams/consumer.py has the cause), so each round restarts a processor that keeps its
tables in memory (every start replays the changelogs, as a RocksDB processor does when it
has no local state: a new machine, partitions moving from another processor), with fresh
records on partitions the group never committed.

And with no broker at all, the commands that read or write plans say how to start one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from agents.executors.config import Executors
from agents.planning import accept, plan_record
from devline.settings import Settings
from devline.supervisor import child_env
from streams import topics as T
from streams.client import produce
from streams.topics import create_topics
from tests.harness import ROOT, events, raw_records, submit, wait_for

PARTITIONS = 12  # room for the rounds: each commits one more partition of plans and events
ROUNDS = 8  # a start-up lost them in 30-70% of the rounds, depending on the machine
WITHIN = 30.0  # a start-up reads them in a few seconds; a lost record never comes


def partition(key: str) -> int:
    parts = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key.encode(), parts, parts))


def key_avoiding(stem: str, used: set[int]) -> str:
    """A plan id whose partition is none of `used`."""
    return next(f"{stem}-{i}" for i in range(1000) if partition(f"{stem}-{i}") not in used)


def key_within(stem: str, partitions: set[int]) -> str:
    """A plan id whose partition is one of `partitions`."""
    return next(f"{stem}-{i}" for i in range(1000) if partition(f"{stem}-{i}") in partitions)


def plan(plan_id: str) -> dict[str, Any]:
    return {"id": plan_id, "project": "offline", "name": plan_id,
            "files": [{"path": "a.py", "description": "A module."}]}


@contextmanager
def processor(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`devline processor` in its own process group; SIGTERM at the end."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "devline", "processor"],
                                env=child_env(settings), stdout=out, stderr=subprocess.STDOUT,
                                cwd=ROOT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def accepted(settings: Settings, plan_id: str) -> bool:
    return any(et == "PlanAccepted" and v["plan_id"] == plan_id
               for _, et, v in events(settings, idle=0.3))


def folded(settings: Settings, plan_id: str) -> bool:
    """The processor's `plans` table has the plan (its changelog holds the header)."""
    keys = {plan_id.encode(), json.dumps(plan_id).encode()}  # raw or JSON-serialized
    return any(r.key in keys and r.value
               for r in raw_records(settings, T.changelog("plans"), idle=0.3))


def wait_until(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes],
               log: Path) -> None:
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the processor exited ({proc.returncode}):\n" \
            + log.read_text(errors="replace")[-3000:]
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} within {WITHIN:g}s of the processor starting")


@pytest.mark.kafka
@pytest.mark.timeout(300)
def test_records_produced_while_no_processor_runs_are_read(settings: Settings,
                                                           tmp_path: Path) -> None:
    settings = settings.updated(event_partitions=PARTITIONS, table_store="memory")
    asyncio.run(create_topics(settings))
    log = tmp_path / "processor.log"
    first = key_avoiding("first", set())
    with processor(settings, log) as proc:  # the group and its tables exist from now on
        submit(settings, plan(first))
        wait_for(settings, first, {"PlanAccepted"}, timeout=60)
        assert proc.poll() is None
    committed_plans = {partition(first)}  # and the same partition of devline.events
    executors = Executors.from_file(settings.executor_config).available()
    for round_ in range(ROUNDS):
        # No processor runs: a plan submitted, and a plan accepted (as a planner would
        # send it), on a partition of devline.plans and of devline.events never committed.
        submitted = key_avoiding(f"submitted{round_}", committed_plans)
        offline = key_within(f"accepted{round_}", {partition(submitted)})
        submit(settings, plan(submitted))
        record = accept(plan_record(plan(offline)), executors)
        asyncio.run(produce(settings, T.EVENTS, "PlanAccepted", record, key=offline))
        with open(log, "a") as out:
            out.write(f"\n==== round {round_}: {submitted} on plans[{partition(submitted)}], "
                      f"{offline} on events[{partition(offline)}]\n")
        with processor(settings, log) as proc:
            wait_until(f"round {round_}: plan {submitted}, submitted while no processor ran "
                       f"(plans partition {partition(submitted)}), not accepted",
                       partial(accepted, settings, submitted), proc, log)
            wait_until(f"round {round_}: PlanAccepted of {offline}, produced while no "
                       f"processor ran (events partition {partition(offline)}), not folded",
                       partial(folded, settings, offline), proc, log)
        committed_plans.add(partition(submitted))


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", [["status", "some-plan"], ["events", "some-plan"],
                                     ["submit", "--no-verdict", "examples/calc-plan.yaml"]])
def test_no_broker_says_how_to_start_one(command: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "DEVLINE_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "devline", "--bootstrap",
                           f"127.0.0.1:{closed_port()}", *command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Is a broker running? (scripts/kafka-local start" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
