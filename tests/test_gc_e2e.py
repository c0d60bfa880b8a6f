"""`devline gc` on the real broker: a plan runs, every stored thing is made to look three
days old, an orphan is added; gc deletes the orphan and keeps every content the live
tables need, `--dry-run` deletes nothing, and the same plan again is all cache hits."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devline.settings import Settings
from devline.supervisor import child_env
from streams.artifacts import LocalArtifactStore
from tests.harness import running_pipeline, submit, wait_for
from tests.test_pipeline_e2e import changelog_state, example_plan

ROOT = Path(__file__).resolve().parents[1]


def gc(settings: Settings, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "devline", "gc", "--json", *args],
                          env=child_env(settings), capture_output=True, text=True,
                          timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def age_everything(root: Path, days: float) -> int:
    t = time.time() - days * 86400
    n = 0
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (t, t))
            n += 1
    return n


def needed(settings: Settings) -> set[str]:
    """Every content the live tasks and cache entries name."""
    live = changelog_state(settings)
    digests = {t["content_hash"] for t in live["tasks"].values() if t.get("content_hash")}
    digests |= {t["spec"]["brief"] for t in live["tasks"].values() if t["spec"].get("brief")}
    return digests


def test_gc_deletes_the_orphan_and_keeps_the_plan(topics: Settings) -> None:
    settings = topics
    store = LocalArtifactStore(settings.artifacts())
    with running_pipeline(settings, workers=2):
        first = submit(settings, example_plan())
        kind, done = wait_for(settings, first, {"PlanCompleted", "PlanRejected"})
        assert kind == "PlanCompleted" and done["executor_runs"] == 9
        orphan = asyncio.run(store.put(b"nobody needs this"))
        aged = age_everything(settings.artifacts(), days=3)
        listed = len(asyncio.run(store.objects()))

        dry = gc(settings, "--dry-run")
        assert dry["dry_run"] and dry["deleted"] >= 1
        assert len(asyncio.run(store.objects())) == listed  # nothing deleted
        assert asyncio.run(store.get(orphan)) is not None

        report = gc(settings)
        assert report["deleted"] == dry["deleted"] and report["refs_deleted"] == 0
        assert report["refs_kept"].get("cache ref") == 9
        assert asyncio.run(store.get(orphan)) is None
        wanted = needed(settings)
        assert len(wanted) >= 9
        for digest in wanted:
            assert asyncio.run(store.get(digest)) is not None, digest
        print(f"\n{aged} files aged; gc kept {sum(report['kept'].values())}, deleted "
              f"{report['deleted']} ({report['deleted_bytes']} B) in "
              f"{report['seconds']['total']:.2f}s")

        # The cache still serves the plan: every file from it, contents readable.
        second = submit(settings, example_plan())
        _, again = wait_for(settings, second, {"PlanCompleted"})
        assert again["cache_hits"] == 9 and again["executor_runs"] == 0


def test_gc_refuses_without_the_changelogs(settings: Settings) -> None:
    """A prefix whose tables were never written: the live set is unknown, nothing goes."""
    store = LocalArtifactStore(settings.artifacts())
    digest = asyncio.run(store.put(b"maybe needed"))
    age_everything(settings.artifacts(), days=3)
    done = subprocess.run([sys.executable, "-m", "devline", "gc"], env=child_env(settings),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1
    assert "does not exist" in done.stderr and "nothing deleted" in done.stderr
    assert asyncio.run(store.get(digest)) == b"maybe needed"
