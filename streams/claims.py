"""Claim checks at the edges: big contents go through the artifact store, records carry hashes.

- A plan whose PlanSubmitted would exceed `PLAN_INLINE_MAX_BYTES` is sent with its files in
  the store (`files_ref`); the planner fetches them (`streams.planning`).
- A task's description and known content past `agents.planning.briefs.INLINE_MAX_BYTES`
  travel as a brief hash; a worker fetches the brief and its dependencies' outputs by hash
  and builds the executor's context itself (`resolve_item`).
- A finished file's content is stored by the worker; a `TaskCompleted` carries it inline
  only up to `CONTENT_INLINE_MAX_BYTES`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from agents.context import build_context
from agents.planning.briefs import open_brief
from agents.types import WorkItem
from devline.errors import ExecutorError
from streams.artifacts import ArtifactError, ArtifactStore

PLAN_INLINE_MAX_BYTES = 1024 * 1024  # a PlanSubmitted over this sends its files by hash
CONTENT_INLINE_MAX_BYTES = 4096       # a TaskCompleted carries content up to this inline


async def submission(record: dict[str, Any], encoded_size: int, store: ArtifactStore
                     ) -> dict[str, Any]:
    """The PlanSubmitted to send: as it is, or with its files stored and referenced."""
    if encoded_size <= PLAN_INLINE_MAX_BYTES:
        return record
    doc = json.dumps(record["files"], sort_keys=True, ensure_ascii=False).encode("utf-8")
    return {**record, "files": [], "files_ref": await store.put(doc)}


async def completed_content(content: str, store: ArtifactStore) -> tuple[str | None, str, int]:
    """(inline content or None, sha256, size) of a finished file; a big one is stored first,
    so the event that names its hash is sent only once the store has it."""
    data = content.encode("utf-8")
    digest = await store.put(data)
    return (content if len(data) <= CONTENT_INLINE_MAX_BYTES else None), digest, len(data)


def missing(what: str, digest: str) -> ExecutorError:
    return ExecutorError(f"{what} (artifact {digest[:12]}) is not in the artifact store this "
                         "worker reads: every process must share one store",
                         retryable=False, error_type="missing-artifact")


async def resolve_item(item: WorkItem, brief: str | None, store: ArtifactStore) -> WorkItem:
    """The work item with its brief and its dependencies' outputs fetched by hash."""
    try:
        return await _resolved(item, brief, store)
    except ArtifactError as exc:  # the store is away: another attempt can help
        raise ExecutorError(f"cannot read the task's inputs: {exc}", retryable=True,
                            error_type="artifact-store") from exc


async def _resolved(item: WorkItem, brief: str | None, store: ArtifactStore) -> WorkItem:
    description, content = item.description, item.content
    if brief:
        data = await store.get(brief)
        if data is None:
            raise missing(f"the brief of {item.path}", brief)
        try:
            description, content = open_brief(data)
        except ValueError as exc:
            raise ExecutorError(f"the brief of {item.path} (artifact {brief[:12]}) is not a "
                                f"brief: {exc}", retryable=False, error_type="bad-brief") from None
    wanted = [c for c in item.context if c.content is None and c.interface is None
              and c.content_hash]
    if not wanted and not brief:
        return item
    fetched = await asyncio.gather(*(store.get(c.content_hash) for c in wanted))
    by_path = {c.path: data for c, data in zip(wanted, fetched, strict=True)}
    deps = []
    for c in item.context:
        if c.path in by_path:
            data = by_path[c.path]
            deps.append((c.path, c.content_hash,
                         data.decode("utf-8", "replace") if data is not None else None))
        else:
            deps.append((c.path, c.content_hash, c.content))
    context = build_context(deps) if wanted else item.context
    return dataclasses.replace(item, description=description, content=content,
                               context=context)
