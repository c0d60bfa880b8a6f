"""Integration runs at the edge: plan the shards, send them to the test workers, and keep
each project's per-test durations for the next balance.

Planning is deterministic for given files and durations, and the run id names the
assignment, so planning twice after a crash gives either the same `IntegrationStarted` or
a second run the fold ignores. Shard `i` goes to partition `i` of the test work topic;
test workers share it with the round-robin assignor, so with as many shards as workers
each worker gets one shard.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from agents.integration import discover_tests, plan_shards
from agents.integration.discovery import is_pytest_module
from agents.scheduling import integration as I
from agents.scheduling.fold import PlanState
from agents.scheduling.model import decision_id
from streams import topics as T
from streams.artifacts import ArtifactError
from streams.edge.ports import Ports
from streams.emit import detach

log = logging.getLogger("devline.integration")

MAX_TESTS = 20_000      # tests per run (a suite over this is refused, with the reason)
DURATIONS_KEPT = 20_000  # per-test durations remembered per project


def durations_ref(project: str) -> str:
    """Name of the store ref holding a project's per-test durations (refs are sha256s)."""
    return hashlib.sha256(f"test-durations\x1f{project}".encode()).hexdigest()


class Integrating:
    def __init__(self, ports: Ports) -> None:
        self.p = ports

    async def plan(self, state: PlanState) -> None:
        """A testing plan without a run: discover its tests, balance them, log the run."""
        h = state.header
        integ = h.get("integration") or {}
        if h.get("status") != I.TESTING or integ.get("run_id") is not None:
            return
        files = {t["spec"]["path"]: t["content_hash"] for t in state.tasks.values()
                 if t["content_hash"]}
        manifest = json.dumps({"files": files}, sort_keys=True).encode()
        files_ref = await self.p.store.put(manifest)
        if integ.get("scope") == "failed" and integ.get("failed_tests"):
            tests = list(integ["failed_tests"])
        else:
            tests = await self._discover(files)
        durations = await self.durations(h["project"])
        workers = int((h.get("options") or {}).get("integration.shards")
                      or self.p.settings.test_workers)
        planned = plan_shards(tests[:MAX_TESTS], durations, max(1, workers))
        shards: list[dict[str, Any]] = [
            {"index": s.index, "tests": list(s.tests), "expected_s": s.expected_s}
            for s in planned]
        total = sum(len(s.tests) for s in planned)
        round_ = int(integ["round"])
        run = I.run_id(h["plan_id"], round_, shards)
        await self.p.publish("IntegrationStarted", {
            "event_id": decision_id(h["plan_id"], round_, run, "integration"),
            "plan_id": h["plan_id"], "run_id": run, "round": round_,
            "scope": integ.get("scope") or "full", "project": h["project"],
            "files_ref": files_ref, "tests_total": total,
            "shards": shards, "at": self.p.now_ms()})
        log.info("plan %s: integration round %d (%s): %d tests in %d shard(s)", h["plan_id"],
                 round_, integ.get("scope"), total, len(shards))

    async def send(self, state: PlanState, ev: dict[str, Any]) -> None:
        """The shards of a logged run, each onto its partition of the test work topic."""
        h = state.header
        partitions = max(self.p.settings.work_partitions, 1)
        for shard in ev["shards"]:
            await self.p.publish("TestShard", {
                "event_id": decision_id(ev["run_id"], shard["index"], "shard"),
                "plan_id": h["plan_id"], "run_id": ev["run_id"], "round": ev["round"],
                "shard": shard["index"], "shards": len(ev["shards"]),
                "tests": shard["tests"], "project": ev["project"],
                "files_ref": ev["files_ref"], "sent_at": self.p.now_ms()},
                topic=T.WORK_TEST, key=f"{h['plan_id']}/{ev['run_id']}/{shard['index']}",
                partition=shard["index"] % partitions)

    async def record(self, state: PlanState, ev: dict[str, Any], fresh: bool) -> None:
        """A shard's result: its tests' durations into the project's record (advisory:
        the last writer wins), and its time as a metric."""
        if not fresh or not ev.get("durations"):
            return
        project = state.header.get("project") or ""
        known = await self.durations(project)
        known.update({k: float(v) for k, v in ev["durations"].items()})
        if len(known) > DURATIONS_KEPT:
            known = dict(list(known.items())[-DURATIONS_KEPT:])
        digest = await self.p.store.put(json.dumps(known, sort_keys=True).encode())
        await self.p.store.put_ref(durations_ref(project), digest)
        detach(await self.p.emit.metric("integration", "integration.shard_seconds",
                                 float(ev.get("duration_ms") or 0) / 1000,
                                        shards=str(ev["shards"])))

    async def durations(self, project: str) -> dict[str, float]:
        try:
            digest = await self.p.store.get_ref(durations_ref(project))
            data = await self.p.store.get(digest) if digest else None
            return {str(k): float(v) for k, v in json.loads(data).items()} if data else {}
        except (ArtifactError, ValueError, AttributeError) as exc:
            log.warning("no test durations for %s (%s); balancing by the median", project,
                        exc)
            return {}

    async def _discover(self, files: dict[str, str]) -> list[str]:
        wanted = {p: h for p, h in files.items() if is_pytest_module(p)}
        contents = await asyncio.gather(*(self.p.store.get(h) for h in wanted.values()))
        return await asyncio.to_thread(_discover_in_tmp, dict(zip(wanted, contents,
                                                                  strict=True)))


def _discover_in_tmp(contents: dict[str, bytes | None]) -> list[str]:
    root = Path(tempfile.mkdtemp(prefix="devline-discover-"))
    try:
        for path, data in contents.items():
            if data is None:
                continue
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return discover_tests(root, [p for p, d in contents.items() if d is not None])
    finally:
        shutil.rmtree(root, ignore_errors=True)
