"""Claim checks for what a plan asks: a file's description and known content travel by hash.

An accepted plan is read by the fold, written to the `tasks` table (every record write
sends the whole record to its changelog) and copied into every work item. Carrying each
file's description and content there made a 20,000-file plan with 1 KB descriptions a 20 MB
record. Past `INLINE_MAX_BYTES` they are put in the artifact store as one JSON "brief" per
file and the task spec keeps its sha256 (`brief`); the worker fetches it by hash. Pure code:
the caller stores the blobs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Description + content up to this many UTF-8 bytes stay inline in the task spec: a typical
# one-line description costs no store round trip, anything larger costs 64 hex characters.
INLINE_MAX_BYTES = 512


def brief_blob(description: str, content: str | None) -> bytes:
    """The stored form of a brief: canonical JSON, so equal briefs have equal hashes."""
    return json.dumps({"description": description, "content": content}, sort_keys=True,
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def open_brief(data: bytes) -> tuple[str, str | None]:
    """(description, content) of a stored brief; ValueError when it is not one."""
    doc = json.loads(data.decode("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("description"), str) or \
            not isinstance(doc.get("content"), str | None):
        raise ValueError("not a task brief")
    return doc["description"], doc["content"]


def inline_size(spec: Mapping[str, Any]) -> int:
    return len((spec.get("description") or "").encode("utf-8")) + \
        len((spec.get("content") or "").encode("utf-8"))


def with_briefs(tasks: list[dict[str, Any]], limit: int = INLINE_MAX_BYTES
                ) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """Tasks whose description + content exceed `limit` bytes, rewritten to carry a `brief`
    hash instead (description "", content None); the blobs to store, by sha256."""
    out: list[dict[str, Any]] = []
    blobs: dict[str, bytes] = {}
    for task in tasks:
        if inline_size(task) <= limit:
            out.append({**task, "brief": None})
            continue
        blob = brief_blob(task.get("description") or "", task.get("content"))
        digest = hashlib.sha256(blob).hexdigest()
        blobs[digest] = blob
        out.append({**task, "description": "", "content": None, "brief": digest})
    return out, blobs
