"""Claim checks: big descriptions, contents and plans travel by hash through the store."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from agents.planning.briefs import INLINE_MAX_BYTES, brief_blob, open_brief, with_briefs
from agents.scheduling.cache import cache_key
from agents.types import DepContext, WorkItem
from devline.errors import ExecutorError
from streams import claims
from streams.artifacts import ArtifactError, LocalArtifactStore


def task(tid: str, description: str = "", content: str | None = None) -> dict[str, Any]:
    return {"task_id": tid, "path": tid, "language": None, "description": description,
            "depends_on": [], "content": content, "cost": 1.0, "priority": 1.0, "level": 0,
            "executor": "demo", "simulate": None}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- briefs ---------------------------------------------------------------------------
def test_small_briefs_stay_inline_and_big_ones_go_by_hash() -> None:
    small = task("a.py", "x" * (INLINE_MAX_BYTES - 6), "A = 1\n")  # exactly at the limit
    big = task("b.py", "é" * INLINE_MAX_BYTES, "B = 2\n")            # 2 bytes per char
    out, blobs = with_briefs([small, big])
    assert out[0] == {**small, "brief": None}
    assert out[1]["description"] == "" and out[1]["content"] is None
    assert set(blobs) == {out[1]["brief"]}
    blob = blobs[out[1]["brief"]]
    assert hashlib.sha256(blob).hexdigest() == out[1]["brief"]
    assert open_brief(blob) == (big["description"], big["content"])


def test_equal_briefs_have_equal_hashes_and_different_ones_do_not() -> None:
    a = with_briefs([task("a.py", "d" * 600)])[0][0]["brief"]
    b = with_briefs([task("b.py", "d" * 600)])[0][0]["brief"]
    c = with_briefs([task("a.py", "d" * 601)])[0][0]["brief"]
    assert a == b != c


def test_a_blob_that_is_not_a_brief_is_refused() -> None:
    for bad in (b"[]", b'{"description": 3, "content": null}', b'{"content": "x"}'):
        with pytest.raises(ValueError):
            open_brief(bad)


def test_the_cache_key_counts_the_brief_and_is_unchanged_without_one() -> None:
    spec = task("a.py", "small")
    assert cache_key(spec, "demo", []) == cache_key({**spec, "brief": None}, "demo", [])
    assert cache_key({**spec, "brief": "1" * 64}, "demo", []) != \
        cache_key({**spec, "brief": "2" * 64}, "demo", [])


# -- a worker resolving its item --------------------------------------------------------
def item(**changes: Any) -> WorkItem:
    return WorkItem(plan_id="p", task_id="t.py", path="t.py", **changes)


def test_a_worker_fetches_its_brief_and_dependency_outputs_by_hash(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    brief = run(store.put(brief_blob("write t", "T = 1\n")))
    dep = run(store.put(b"def f():\n    return 1\n"))
    got = run(claims.resolve_item(item(context=(DepContext("d.py", dep),)), brief, store))
    assert (got.description, got.content) == ("write t", "T = 1\n")
    assert got.context == (DepContext("d.py", dep, content="def f():\n    return 1\n"),)


def test_dependency_outputs_over_the_context_budget_become_interfaces(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    body = "def api(x):\n    return x\n" + "# filler\n" * 10_000  # > 64 KB of context
    dep = run(store.put(body.encode()))
    got = run(claims.resolve_item(item(context=(DepContext("d.py", dep),)), None, store))
    assert got.context[0].content is None
    assert got.context[0].interface is not None and "def api(x)" in got.context[0].interface


def test_an_item_with_nothing_by_hash_is_left_as_it_is(tmp_path: Path) -> None:
    inline = item(description="d", context=(DepContext("d.py", "0" * 64, content="x"),))
    assert run(claims.resolve_item(inline, None, LocalArtifactStore(tmp_path))) is inline


def test_a_missing_brief_fails_the_attempt_naming_it_and_is_not_retried(tmp_path: Path
                                                                        ) -> None:
    with pytest.raises(ExecutorError) as caught:
        run(claims.resolve_item(item(), "a" * 64, LocalArtifactStore(tmp_path)))
    assert not caught.value.retryable and caught.value.error_type == "missing-artifact"
    assert "aaaaaaaaaaaa" in str(caught.value) and "t.py" in str(caught.value)


def test_a_store_that_is_away_fails_the_attempt_as_retryable(tmp_path: Path) -> None:
    class Away(LocalArtifactStore):
        async def get(self, digest: str) -> bytes | None:
            raise ArtifactError("disk on fire")

    with pytest.raises(ExecutorError) as caught:
        run(claims.resolve_item(item(), "a" * 64, Away(tmp_path)))
    assert caught.value.retryable and "disk on fire" in str(caught.value)


# -- results and submissions ----------------------------------------------------------
def test_a_big_output_is_stored_and_sent_by_hash_a_small_one_inline(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    small = "x" * claims.CONTENT_INLINE_MAX_BYTES
    big = small + "y"
    for text, inline in ((small, True), (big, False)):
        content, digest, size = run(claims.completed_content(text, store))
        assert (content == text) is inline and (content is None) is not inline
        assert digest == hashlib.sha256(text.encode()).hexdigest() and size == len(text)
        assert run(store.get(digest)) == text.encode()


def test_a_plan_too_big_for_a_record_sends_its_files_by_hash(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    record = {"plan_id": "p", "files": [{"path": "a.py", "description": "d"}]}
    assert run(claims.submission(record, claims.PLAN_INLINE_MAX_BYTES, store)) is record
    sent = run(claims.submission(record, claims.PLAN_INLINE_MAX_BYTES + 1, store))
    assert sent["files"] == [] and sent["plan_id"] == "p"
    assert json.loads(run(store.get(sent["files_ref"]))) == record["files"]
