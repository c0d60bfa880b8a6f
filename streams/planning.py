"""Planner agent: PlanSubmitted → PlanAccepted (graph, priorities) or PlanRejected.

Idempotent per plan id: the `submissions` table remembers the digest of the plan each id
was accepted for. The same plan again is a no-op; other content under an accepted id is
rejected with the reason; a rejected id may be used again. Each decision is written down
before it is sent and marked sent after, so a crash in between re-sends the same decision
and an offset reset (old submissions read again) decides nothing twice.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from agents.executors.config import Executors
from agents.planning import accept, reject, submission_digest
from agents.planning.briefs import with_briefs
from devline.errors import PlanError, SchemaError
from streams import topics as T
from streams.edge.persist import Unexpected, persist
from streams.edge.ports import RawRecord

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger("devline.planner")
SUBMISSIONS = frozenset({"PlanSubmitted"})


class Planner:
    def __init__(self, pipeline: Pipeline) -> None:
        self.p = pipeline
        self.executors = Executors.from_file(pipeline.settings.executor_config).available()
        self.submissions: Any = pipeline.submissions

    async def on_record(self, rec: RawRecord) -> None:
        proc = self.p.processor  # type: ignore[attr-defined]
        parsed = await proc.decoded(rec, SUBMISSIONS, T.PLANS)
        if parsed is None:
            return
        record = parsed[1]
        log.debug("plan %s submitted (%s[%d]@%d)", record.get("plan_id"), rec.topic,
                  rec.partition, rec.offset)
        try:
            await persist(partial(self.decide, record, rec.offset),
                          what=f"planning {record.get('plan_id')}", log=log)
        except Unexpected as exc:  # a bug, not the plan's fault: keep it, go on
            await proc.reject(rec, f"planning failed (a devline bug, please report it): {exc}")

    async def decide(self, record: dict[str, Any], offset: int) -> None:
        plan_id = str(record["plan_id"])
        try:
            record = await self.resolved(record)
        except PlanError as exc:
            log.info("plan %s rejected: %s", plan_id, exc)
            # Its digest is that of the files it could not read: none a submitter knows.
            await self._send("PlanRejected", {**reject(record, exc), "digest": None})
            return
        digest = submission_digest(record)
        seen = self.submissions.get(plan_id)
        if seen and seen["digest"] != digest and seen.get("verdict") == "PlanAccepted":
            await self._send("PlanRejected", reject(record, PlanError(
                f"plan id {plan_id!r} was already accepted for other content (digest "
                f"{seen['digest'][:12]}, this one {digest[:12]}); submit it under a new id",
                field="plan_id")))
            return
        if seen and seen["digest"] == digest and seen.get("sent"):
            log.info("plan %s submitted again with the same content: nothing to do", plan_id)
            return
        if not seen or seen["digest"] != digest:
            seen = {"digest": digest, "offset": offset, "at": self.p.ports.now_ms(),
                    "sent": False, "verdict": None}
        event_type, decision, blobs = self._verdict(record, int(seen["at"]))
        seen = {**seen, "verdict": event_type}
        self.submissions[plan_id] = seen
        for blob in blobs.values():  # briefs first: a worker fetches them by hash
            await self.p.ports.store.put(blob)
        await self._send(event_type, decision)
        log.debug("plan %s: %s sent", plan_id, event_type)
        self.submissions[plan_id] = {**seen, "sent": True}

    async def resolved(self, record: dict[str, Any]) -> dict[str, Any]:
        """The submission with its files: a plan too large for one record arrives with its
        files in the artifact store (`files_ref`), fetched and checked here."""
        ref = record.get("files_ref")
        if not ref:
            return record
        data = await self.p.ports.store.get(ref)
        if data is None:
            raise PlanError(f"the plan's files (artifact {ref[:12]}) are not in the artifact "
                            "store this processor reads; submit and processor must share "
                            "one store (DEVLINE_ARTIFACT_DIR)", field="files_ref")
        try:
            files = json.loads(data.decode("utf-8"))
        except ValueError as exc:
            raise PlanError(f"the plan's files (artifact {ref[:12]}) are not JSON: {exc}",
                            field="files_ref") from None
        if not isinstance(files, list):
            raise PlanError(f"the plan's files (artifact {ref[:12]}) are not a list",
                            field="files_ref")
        return {**record, "files": files, "files_ref": None}

    def _verdict(self, record: dict[str, Any], at: int
                 ) -> tuple[str, dict[str, Any], dict[str, bytes]]:
        try:
            accepted = accept(record, self.executors, accepted_at=at)
        except PlanError as exc:
            log.info("plan %s rejected: %s", record.get("plan_id"), exc)
            return "PlanRejected", reject(record, exc), {}
        accepted["tasks"], blobs = with_briefs(accepted["tasks"])
        try:
            size = len(self.p.codec.encode("PlanAccepted", accepted))
        except SchemaError as exc:
            return "PlanRejected", reject(record, PlanError(
                f"plan too large to accept: {exc}", field="files")), {}
        log.info("plan %s accepted: %d tasks (%d briefs by hash, %d KB), critical path %d "
                 "long", accepted["plan_id"], len(accepted["tasks"]), len(blobs),
                 size // 1024, len(accepted["critical_path"]))
        return "PlanAccepted", accepted, blobs

    async def _send(self, event_type: str, record: dict[str, Any]) -> None:
        await self.p.ports.publish(event_type, record)


def register_planner(pipeline: Pipeline) -> Planner:
    planner = Planner(pipeline)

    @pipeline.app.agent(pipeline.plans_topic, name="planner")
    async def plan_agent(stream: Any) -> None:
        async for event in stream.events():
            await planner.on_record(RawRecord.of(event.message))

    return planner
