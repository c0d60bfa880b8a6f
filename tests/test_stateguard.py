"""Local table stores that do not match Kafka's changelogs are deleted before a processor
starts (another cluster, changelogs created again), and the processor rebuilds them
instead of stopping with Faust's ConsistencyError on every start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from rocksdict import Options, Rdict

from devline.settings import Settings
from streams import topics as T
from streams.client import send_raw
from streams.edge.state import RocksStore
from streams.stateguard import check, stale_databases, stores_dir
from tests.harness import running_pipeline, submit, wait_for


def test_a_database_past_its_changelogs_end_is_stale() -> None:
    a, b, c, d = (Path(f"/x/{n}") for n in "abcd")
    dbs = {a: ("plans", 0, 15), b: ("plans", 1, 4), c: ("tasks", 0, None),
           d: ("cache", 2, 0)}
    ends = {("plans", 0): 0, ("plans", 1): 5, ("tasks", 0): 0, ("cache", 2): 0}
    stale = stale_databases(dbs, ends)
    assert [path for path, _ in stale] == [a, d]
    assert "applied offset 15 of plans-changelog[0], whose end is 0" in stale[0][1]
    assert stale_databases(dbs, {}) == []  # no end known: not judged


def database(settings: Settings, table: str, partition: int, applied: int) -> Path:
    path = stores_dir(settings) / "default" / "v1" / "tables" / f"{table}-{partition}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    db = Rdict(str(path), options=Options(raw_mode=True))  # as the store writes
    db[RocksStore.offset_key] = str(applied).encode()
    db[b"some-key"] = b"some value"
    db.close()
    return path


def test_stale_databases_and_another_clusters_stores_are_deleted(topics: Settings) -> None:
    settings = topics
    # The changelog of `plans` partition 1 holds one record (end 1); the others are empty.
    asyncio.run(send_raw(settings, settings.topic(T.changelog("plans")), b"k", b"v", [],
                         partition=1))
    kept = database(settings, "plans", 1, 0)
    ahead = database(settings, "plans", 2, 15)
    verdict = asyncio.run(check(settings))
    assert verdict.deleted == [ahead] and not ahead.exists() and kept.exists()
    assert "applied offset 15" in verdict.reasons[0]
    marker = stores_dir(settings) / "cluster-id"
    cluster = marker.read_text().strip()
    assert cluster
    assert asyncio.run(check(settings)).deleted == []  # nothing more to do
    marker.write_text("another-cluster\n")
    moved = asyncio.run(check(settings))
    assert moved.cluster_changed and moved.deleted == [stores_dir(settings)]
    assert not kept.exists() and marker.read_text().strip() == cluster


def test_a_processor_whose_changelogs_were_created_again_rebuilds_and_runs(
        topics: Settings) -> None:
    settings = topics
    plan = {"project": "guard", "name": "first", "options": {"executor": "demo", "qa": "off"},
            "files": [{"path": f"g{i}.py", "content": f"G = {i}\n"} for i in range(3)]}
    with running_pipeline(settings, workers=1, test_workers=0):
        first = submit(settings, plan)
        assert wait_for(settings, first, {"PlanCompleted"}, timeout=90)[0] == "PlanCompleted"
    assert list(stores_dir(settings).glob("*/v*/tables/plans-*.db"))
    asyncio.run(recreate_changelogs(settings))  # as a wiped broker would look
    log = settings.data_dir / "second.log"
    with running_pipeline(settings, workers=1, test_workers=0, log=log):
        second = submit(settings, {**plan, "name": "second", "files": [
            {"path": "h.py", "content": "H = 1\n"}]})
        assert wait_for(settings, second, {"PlanCompleted"}, timeout=90)[0] == "PlanCompleted"
    text = log.read_text()
    assert "ConsistencyError" not in text
    assert "local table stores that do not match Kafka were deleted" in text
    assert "applied offset" in text, text[-3000:]


async def recreate_changelogs(settings: Settings) -> None:
    names = [settings.topic(T.changelog(t)) for t in T.TABLES]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(names)
        for _ in range(100):  # deletion is asynchronous on the broker
            if not set(names) & set(await admin.list_topics()):
                break
            await asyncio.sleep(0.3)
    finally:
        await admin.close()
    await T.create_topics(settings)
    await T.wait_for_topics(settings)
