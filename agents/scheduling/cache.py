"""Result-cache keys: a content hash of (task spec, executor identity, dependency outputs)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

# Fields of a task spec that change what an executor writes. Priority, level, cost and
# simulate are scheduling details: changing them must not invalidate a cached result.
SPEC_FIELDS = ("path", "language", "description", "content", "executor")


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def cache_key(spec: Mapping[str, Any], identity: str, dep_hashes: Sequence[str]) -> str:
    """Stable key: equal inputs give equal keys across processes and runs."""
    fields = {f: spec.get(f) for f in SPEC_FIELDS}
    if spec.get("brief"):  # description and content by hash (absent keys keep old keys)
        fields["brief"] = spec["brief"]
    doc = {
        "spec": fields,
        "executor": identity,
        "deps": sorted(dep_hashes),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
