"""Two stream processors on one prefix: they share the plans, exactly one dispatches, a
SIGKILLed dispatcher loses nothing and runs nothing twice, and cache hits do not depend on
which processor folds a plan."""

from __future__ import annotations

import json
import os
import re
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from devline.launch import running
from devline.settings import Settings
from tests.harness import events, submit, until, wait_for, wait_for_pool

FILES = [{"path": f"l{layer}/m{i}.py",
          "content": "".join(f"from l{layer - 1}.m{j} import X{j}\n" for j in (i, (i + 1) % 6)
                             if layer) + f"X{i} = {layer * 10 + i}\n",
          "simulate": {"duration_s": 0.3}}
         for layer in range(4) for i in range(6)]


def elected(log: Path) -> list[int]:
    return [int(m) for m in re.findall(r"elected dispatcher \(pid (\d+)", log.read_text(
        errors="replace"))]


def test_two_processors_share_plans_and_survive_their_dispatcher(topics: Settings,
                                                                 tmp_path: Path) -> None:
    journal = tmp_path / "runs.jsonl"
    config = tmp_path / "executors.json"
    config.write_text(json.dumps({"demo": {"journal": str(journal)}}))
    settings = topics.updated(executor_config=config)
    log = tmp_path / "run.log"
    with running(settings, ["--processors", "2", "--workers", "2"], log):
        wait_for_pool(settings, 2)
        first = submit(settings, {"project": "multi", "name": "first", "files": FILES})
        until("a third of the plan", lambda: sum(
            1 for _, et, v in events(settings, idle=0.3)
            if et == "TaskCompleted" and v["plan_id"] == first) >= 8)
        (dispatcher,) = until("one dispatcher", lambda: elected(log)[-1:])
        os.kill(dispatcher, signal.SIGKILL)
        kind, done = wait_for(settings, first, {"PlanCompleted", "PlanRejected"}, timeout=180)
        assert kind == "PlanCompleted" and done["files"] == len(FILES)
        # The same files under plan ids on every partition (so on both processors): every
        # one is answered from the cache, whichever processor folded the first plan.
        again = [submit(settings, doc) for doc in one_per_partition(settings)]
        for plan_id in again:
            kind, done = wait_for(settings, plan_id, {"PlanCompleted"}, timeout=120)
            assert (done["cache_hits"], done["executor_runs"]) == (len(FILES), 0), plan_id
    seats = elected(log)
    assert len(seats) >= 2 and dispatcher in seats and seats[-1] != dispatcher
    runs = [json.loads(line) for line in journal.read_text().splitlines()]
    finished = Counter(r["task"] for r in runs if r["run"] == "finish")
    assert set(finished) == {f["path"] for f in FILES}
    assert set(finished.values()) == {1}, {t: n for t, n in finished.items() if n > 1}
    accepted = {r.partition for r, et, v in events(settings) if et == "PlanAccepted"}
    assert accepted == set(range(settings.event_partitions))


def one_per_partition(settings: Settings) -> list[dict[str, Any]]:
    """Plans of FILES whose ids Kafka's default partitioner puts on each events partition."""
    partitions = list(range(settings.event_partitions))
    found: dict[int, dict[str, Any]] = {}
    for n in range(1000):
        doc = {"plan_id": f"again-{n}", "project": "multi", "name": f"again {n}",
               "files": FILES}
        found.setdefault(DefaultPartitioner()(doc["plan_id"].encode(), partitions,
                                              partitions), doc)
        if len(found) == len(partitions):
            break
    return [found[p] for p in partitions]
