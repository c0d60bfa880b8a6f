"""The worker's QA step: a fix task's inputs fetched by hash, and the checker chain run on
what the executor produced, in a sandbox built from the artifact store.

QA runs in the worker that wrote the file, right after the executor (aider's lint-after-edit
shape): the file, its dependencies and the tools are already at hand, and a verdict costs no
extra trip through Kafka. The verdict travels in the result event: `TaskCompleted.qa` when
the file passed (it is *verified*), a `TaskFailed` with error type `qa`, the failing
version's hash and the evidence when it did not; the fold turns that into a fix task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import shlex
from collections.abc import Collection
from typing import Any

from agents.context import interface_of
from agents.integration import TestOutcome, attribute
from agents.qa import CheckResult, QAConfig, Verdict, check_file
from agents.scheduling.fixes import EVIDENCE_MAX, QA_ERROR
from agents.types import FixContext, WorkItem
from devline.errors import ConfigError, ExecutorError
from devline.settings import Settings
from streams.artifacts import ArtifactError, ArtifactStore
from streams.claims import missing

log = logging.getLogger("devline.worker")

RECORD_OUTPUT_MAX = 2048  # characters of each check's output in the result event


class Checker:
    """Runs a work item's checker chain; one per worker process."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.config = QAConfig.from_file(settings.qa_config)

    async def fix_context(self, item: WorkItem, raw: dict[str, Any]) -> WorkItem:
        """A fix task's item with the version to repair fetched from the store."""
        brief = raw.get("fix")
        if item.kind != "fix" or not brief:
            return item
        content = await self._text(brief["base_hash"], f"the version of {item.path} to fix")
        fix = FixContext(
            content=content, base_hash=brief["base_hash"], check=brief["check"],
            command=brief["command"], summary=brief["summary"], output=brief["output"],
            lines=tuple((int(r[0]), int(r[-1])) for r in brief.get("lines") or [] if r),
            fix_attempt=int(brief["fix_attempt"]), reverted=bool(brief.get("reverted")),
            history=tuple(brief.get("history") or ()))
        return dataclasses.replace(item, fix=fix)

    async def verdict(self, item: WorkItem, raw: dict[str, Any], content: str
                      ) -> tuple[Verdict, dict[str, Any]] | None:
        """The chain's verdict on `content` and its `QAReport` record, or None when the
        plan's QA is off."""
        spec = raw.get("qa")
        if not spec or spec.get("chain") == "off":
            return None
        # Dependencies the executor's context already holds whole are not read again.
        files = {c.path: c.content for c in item.context if c.content is not None}
        wanted = {c.path: c.content_hash for c in item.context
                  if c.content is None and c.content_hash}
        wanted.update({f["path"]: f["content_hash"] for f in spec.get("files") or []
                       if f["path"] not in files})
        wanted.pop(item.path, None)
        texts = await asyncio.gather(*(self._text(h, p) for p, h in wanted.items()))
        files.update(zip(wanted, texts, strict=True))
        files[item.path] = content
        previous = (await self._text(spec["previous_hash"], f"the last verified {item.path}")
                    if spec.get("previous_hash") else None)
        try:
            verdict = await check_file(item.path, files, chain=str(spec["chain"]),
                                       previous=previous, config=self.config,
                                       timeout_s=self.settings.qa_timeout)
            return verdict, qa_record(verdict, list(files))
        except ConfigError as exc:  # e.g. a chain this cluster does not have: not retryable
            raise ExecutorError(f"cannot check {item.path}: {exc}", retryable=False,
                                error_type="qa-config") from exc

    async def _text(self, digest: str, what: str) -> str:
        try:
            data = await self.store.get(digest)
        except ArtifactError as exc:  # the store is away: another attempt can help
            raise ExecutorError(f"cannot read {what}: {exc}", retryable=True,
                                error_type="artifact-store") from exc
        if data is None:
            raise missing(what, digest)
        return data.decode("utf-8", errors="replace")


def interface_hash(path: str, content: str) -> str:
    """sha256 of what dependents build against: a module's public interface (signatures,
    exports), or the whole content of a file that has none we can read."""
    surface = interface_of(path, content) or content
    return hashlib.sha256(surface.encode("utf-8")).hexdigest()


def qa_record(verdict: Verdict, files: Collection[str] = ()) -> dict[str, Any]:
    """The verdict as the `QAReport` of a result event; `files` are the plan files the
    sandbox held (for attributing a test file's failing tests)."""
    return {"chain": verdict.chain, "passed": verdict.passed,
            "duration_ms": int(verdict.duration_ms), "fingerprint": verdict.fingerprint,
            "checks": [{**_check_record(c), "attributed": attributed(verdict.path, c, files)}
                       for c in verdict.checks]}


def attributed(path: str, check: CheckResult, files: Collection[str]) -> list[str]:
    """For a test file whose own tests fail: the plan files the failures point at, best
    first (the innermost non-test traceback frame), when that is not the test itself."""
    if check.name != "pytest" or not check.blocking or not files:
        return []
    outcome = TestOutcome(path, "failed", 0.0, "", check.output, check.output)
    return [f for f in attribute(outcome, files) if f != path][:5]


def _check_record(check: CheckResult) -> dict[str, Any]:
    blocking = check.introduced if check.blocking else ()
    lines = sorted({(f.line, f.end_line or f.line) for f in blocking if f.line is not None})
    return {"name": check.name, "status": str(check.status), "blocking": check.blocking,
            "command": shlex.join(check.command), "duration_ms": int(check.duration_ms),
            "findings": len(check.findings), "introduced": len(check.introduced),
            "reason": check.reason, "output": _bounded(check.output, RECORD_OUTPUT_MAX),
            "lines": [list(r) for r in lines[:50]]}


def metric_points(verdict: Verdict) -> list[tuple[str, float, dict[str, str]]]:
    """What one verdict adds to devline.metrics: each check's duration by checker and
    status, and the verdict (low-cardinality labels only: no paths, no task ids)."""
    points = [("qa.check_seconds", c.duration_ms / 1000,
               {"check": c.name, "status": str(c.status)}) for c in verdict.checks]
    points.append(("qa.verdicts", 1.0, {"chain": verdict.chain,
                                        "passed": "true" if verdict.passed else "false"}))
    points.append(("qa.chain_seconds", verdict.duration_ms / 1000, {"chain": verdict.chain}))
    return points


def qa_failure(verdict: Verdict) -> ExecutorError:
    """A failed verdict as the error a `TaskFailed` reports (the evidence in `output`)."""
    evidence = verdict.evidence()
    return ExecutorError(str(evidence.get("summary") or "checks failed"), retryable=True,
                         error_type=QA_ERROR,
                         output=_bounded(str(evidence.get("output") or ""), EVIDENCE_MAX))


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2 - 40
    return f"{text[:half]}\n... {len(text) - 2 * half} characters elided ...\n{text[-half:]}"

