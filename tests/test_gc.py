"""`devline gc` without a broker: the mark over synthetic changelog records, the sweep on
both stores (local directory and S3 on moto), and cache expiry in the retention sweep."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, cast

import pytest

from devline.settings import Settings
from streams.artifacts import TOUCH_AFTER_S, LocalArtifactStore, sha256
from streams.edge import retention as R
from streams.edge.integrating import durations_ref
from streams.edge.ports import Ports
from streams.edge.retention import Retention, forget, touch
from streams.gc import (
    BRIEF,
    CACHE_ENTRY,
    DEAD_LETTER,
    DELETED_REF_TARGET,
    FAILED_VERSION,
    FIX_BASE,
    FIX_VERSION,
    OTHER_FIELD,
    TASK_OUTPUT,
    Collectable,
    GcError,
    Live,
    Marker,
    dead_letter_refs,
    looks_like_durations,
    sweep,
)
from streams.observe.snapshot import snapshot_ref
from tests.test_artifacts_s3 import (  # noqa: F401 - fixtures
    admin,
    aws_env,
    bucket,
    s3_backend,
    s3_endpoint,
)
from tests.test_table_store import recover, rocks_table

DAY_MS = 86_400_000


def h(name: str) -> str:
    return sha256(name.encode())


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def key(name: str) -> bytes:
    return json.dumps(name).encode()  # Faust writes str keys as JSON


def a_task(**over: Any) -> dict[str, Any]:
    task = {"status": "done", "content_hash": h("out"), "cache_key": h("ck"),
            "spec": {"path": "a.py", "brief": h("brief"), "depends_on": []},
            "fix_base": {"content_hash": h("base"), "failing": 1},
            "fixes": [{"content_hash": h("v1")}, {"content_hash": h("v2")}],
            "last_failure": {"content_hash": h("bad"), "output": "boom"},
            "integration_ref": h("later-field"), "seq": 3}
    task.update(over)
    return task


# -- mark -----------------------------------------------------------------------------------
def test_mark_reads_every_content_a_task_names() -> None:
    m = Marker()
    m.add("tasks", 0, key("p/a"), js(a_task()))
    live = m.live()
    assert live.objects == {h("out"): TASK_OUTPUT, h("brief"): BRIEF, h("base"): FIX_BASE,
                            h("v1"): FIX_VERSION, h("v2"): FIX_VERSION,
                            h("bad"): FAILED_VERSION, h("later-field"): OTHER_FIELD,
                            h("ck"): OTHER_FIELD}
    assert live.task_refs == {h("ck")}


def test_latest_value_per_key_counts_and_tombstones_delete() -> None:
    m = Marker()
    m.add("tasks", 1, key("p/a"), js(a_task(content_hash=h("old"), fixes=[], fix_base=None,
                                            last_failure=None)))
    m.add("tasks", 1, key("p/a"), js(a_task(content_hash=h("new"), fixes=[], fix_base=None,
                                            last_failure=None)))
    m.add("tasks", 1, key("p/b"), js(a_task(content_hash=h("gone"))))
    m.add("tasks", 1, key("p/b"), None)
    live = m.live()
    assert h("new") in live.objects and h("old") not in live.objects
    assert h("gone") not in live.objects and live.records["tasks"] == 1


def test_a_cache_key_live_in_any_partition_is_live() -> None:
    m = Marker()
    m.add("cache", 0, key(h("k")), js({"content_hash": h("c0"), "size": 1}))
    m.add("cache", 2, key(h("k")), js({"content_hash": h("c2"), "size": 1, "at": 5}))
    m.add("cache", 0, key(h("k")), None)  # expired in partition 0 only
    m.add("cache", 1, key(h("x")), js({"content_hash": h("cx"), "size": 1}))
    m.add("cache", 1, key(h("x")), None)
    live = m.live()
    assert live.cache_keys == {h("k")}
    assert live.objects == {h("c2"): CACHE_ENTRY}


def test_plans_give_projects_and_submissions_nothing_by_name() -> None:
    m = Marker()
    m.add("plans", 0, key("p"), js({"plan_id": "p", "project": "calc", "status": "done"}))
    m.add("submissions", 0, key("p"), js({"digest": h("plan"), "sent": True}))
    live = m.live()
    assert live.projects == {"calc"}
    assert live.ref_names()[durations_ref("calc")] == "test durations"
    assert live.objects == {h("plan"): OTHER_FIELD}  # kept: errs on keeping


def test_a_value_it_cannot_read_stops_the_run() -> None:
    with pytest.raises(GcError, match="not JSON"):
        Marker().add("tasks", 0, key("p/a"), b"\x00avro?")


def test_dead_letter_headers_name_their_originals() -> None:
    headers = [("dlq-reason", b"too big"), ("dlq-value-ref", f"sha256:{h('v')}".encode()),
               ("dlq-key-ref", f"sha256:{h('k')}".encode()), ("dlq-value-ref", b"sha256:zz")]
    assert dead_letter_refs(headers) == [h("v"), h("k")]


def test_durations_records_are_told_from_files() -> None:
    assert looks_like_durations(b'{"tests/test_a.py::test_x": 0.25, "t::y": 3}')
    assert not looks_like_durations(b'{"name": "calc"}')
    assert not looks_like_durations(b"print('hi')\n")
    assert not looks_like_durations(b"{}")


# -- sweep, on both stores --------------------------------------------------------------
NOW = int(time.time() * 1000)
GRACE_S = 24 * 3600.0


class Aged:
    """A store plus a way to make an object or ref look old."""

    def __init__(self, store: Collectable, age: Any) -> None:
        self.store = store
        self.age = age


@pytest.fixture(params=["local", "s3"])
def aged(request: pytest.FixtureRequest, tmp_path: Path) -> Aged:
    if request.param == "local":
        store = LocalArtifactStore(tmp_path / "artifacts")

        def age_local(kind: str, name: str, days: float) -> None:
            path = store.path_for(name) if kind == "object" else store._ref_path(name)
            t = time.time() - days * 86400
            os.utime(path, (t, t))

        return Aged(store, age_local)
    backend = s3_backend(request.getfixturevalue("s3_endpoint"),
                         request.getfixturevalue("bucket"))
    s3 = cast(Any, backend.store)

    def age_s3(kind: str, name: str, days: float) -> None:
        # moto keeps LastModified in its backend: set it there, as time would.
        import datetime

        from moto.s3.models import s3_backends

        k = s3.key_for(name) if kind == "object" else s3.ref_key(name)
        for account in s3_backends.values():
            for region in account.values():
                b = region.buckets.get(s3.location.bucket)
                if b is not None and k in b.keys:
                    b.keys[k].last_modified = datetime.datetime.now(datetime.UTC) - \
                        datetime.timedelta(days=days)
                    return
        pytest.fail("moto runs out of this process: LastModified cannot be aged here")

    return Aged(s3, age_s3)


def put(aged: Aged, data: bytes, days: float = 3) -> str:
    digest = asyncio.run(cast(Any, aged.store).put(data))
    aged.age("object", digest, days)
    return str(digest)


def test_sweep_deletes_old_garbage_only(aged: Aged) -> None:
    store = cast(Any, aged.store)
    live_digest = put(aged, b"live file")
    orphan = put(aged, b"orphan")
    young = put(aged, b"stored a minute ago", days=0)
    letter = put(aged, b"big dead letter")
    live = Live()
    live.need(live_digest, TASK_OUTPUT)
    live.need(letter, DEAD_LETTER)
    dry = asyncio.run(sweep(store, live, grace_s=GRACE_S, dry_run=True))
    assert dry.deleted == 1 and dry.deleted_bytes == len(b"orphan")
    assert asyncio.run(store.get(orphan)) == b"orphan"  # a dry run deletes nothing
    report = asyncio.run(sweep(store, live, grace_s=GRACE_S, dry_run=False))
    assert report.deleted == 1 and report.objects == 4
    assert report.kept == {TASK_OUTPUT: 1, DEAD_LETTER: 1, "young": 1}
    assert asyncio.run(store.get(orphan)) is None
    for digest in (live_digest, young, letter):
        assert asyncio.run(store.get(digest)) is not None


def test_refs_without_their_cache_entry_go_and_their_target_next_run(aged: Aged) -> None:
    store = cast(Any, aged.store)
    kept_target, dropped_target = put(aged, b"cached a"), put(aged, b"cached b")
    durations = put(aged, b'{"t::a": 1.5}')
    for name, target in ((h("live-ck"), kept_target), (h("expired-ck"), dropped_target),
                         (durations_ref("retired-project"), durations)):
        asyncio.run(store.put_ref(name, target))
        aged.age("ref", name, 3)
    live = Live(cache_keys={h("live-ck")})
    first = asyncio.run(sweep(store, live, grace_s=GRACE_S, dry_run=False))
    assert first.refs_deleted == 1 and first.refs_kept == {"cache ref": 1, "test durations": 1}
    assert asyncio.run(store.get_ref(h("expired-ck"))) is None
    assert first.kept[DELETED_REF_TARGET] == 1 and first.deleted == 0
    second = asyncio.run(sweep(store, live, grace_s=GRACE_S, dry_run=False))
    assert second.deleted == 1 and asyncio.run(store.get(dropped_target)) is None
    assert asyncio.run(store.get(kept_target)) == b"cached a"
    assert asyncio.run(store.get_ref(durations_ref("retired-project"))) == durations


def test_an_object_stored_again_is_renewed_and_survives(aged: Aged) -> None:
    store = cast(Any, aged.store)
    digest = put(aged, b"needed again", days=2)
    asyncio.run(store.put(b"needed again"))  # a worker stores the same bytes again
    report = asyncio.run(sweep(store, Live(), grace_s=GRACE_S, dry_run=False))
    assert report.deleted == 0 and asyncio.run(store.get(digest)) == b"needed again"


def test_delete_leaves_what_was_modified_since(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = asyncio.run(store.put(b"x"))
    assert not asyncio.run(store.delete(digest, unless_since_ms=NOW - DAY_MS))
    assert asyncio.run(store.delete(digest))
    assert not asyncio.run(store.delete(digest))  # already gone
    assert asyncio.run(store.objects()) == []
    assert TOUCH_AFTER_S * 2 <= GRACE_S


# -- cache expiry in the retention sweep -------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def ports(cache: dict[str, Any], clock: Clock) -> Ports:
    none = cast(Any, None)
    plans: Any = {}  # dicts serve as tables
    return Ports(Settings.from_env({}), none, none, none, plans, plans, cast(Any, cache),
                 clock=clock)


def test_unused_cache_entries_expire_and_used_ones_stay() -> None:
    clock = Clock()
    now = int(clock.t * 1000)
    cache = {h("old"): {"content_hash": h("a"), "size": 1, "at": now - 31 * DAY_MS},
             h("hit"): {"content_hash": h("b"), "size": 1, "at": now - 1 * DAY_MS},
             h("legacy"): {"content_hash": h("c"), "size": 1}}  # no `at`
    retention = Retention(ports(cache, clock))
    asyncio.run(retention.sweep())
    assert set(cache) == {h("hit"), h("legacy")}
    clock.t += 29.5 * 86400  # a legacy entry counts from the processor's start
    asyncio.run(retention.sweep())
    assert set(cache) == {h("legacy")}
    clock.t += 1 * 86400
    asyncio.run(retention.sweep())
    assert cache == {}


def test_a_sweep_is_bounded_and_the_next_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "CACHE_BATCH", 50)
    monkeypatch.setattr(R, "CACHE_SCAN", 300)
    clock = Clock()
    old = int(clock.t * 1000) - 40 * DAY_MS
    cache = {h(f"k{i}"): {"content_hash": h("x"), "size": 1, "at": old} for i in range(2000)}
    retention = Retention(ports(cache, clock), cache_retention_s=30 * 86400)
    sweeps = 0
    while cache:
        deleted = retention.expire_cache()
        assert deleted <= 50
        sweeps += 1
        assert sweeps < 100
    assert sweeps >= 2000 // 50


def test_forget_sends_tombstones_where_the_key_lives(tmp_path: Path) -> None:
    table, store = rocks_table(tmp_path)
    topic = table.changelog_topic_name
    recover(store, topic, 1, [(h("k"), {"content_hash": h("a"), "at": 1})])
    recover(store, topic, 3, [(h("k"), {"content_hash": h("a"), "at": 2}),
                              (h("other"), {"content_hash": h("b"), "at": 2})])
    sent: list[tuple[int, str, Any]] = []
    table.send_changelog = lambda p, k, v, **kw: sent.append((p, k, v))
    forget(table, h("k"))
    assert sorted(sent) == [(1, h("k"), None), (3, h("k"), None)]
    assert table.get(h("k")) is None and table.get(h("other")) is not None


def test_a_hit_renews_its_entry_at_most_daily() -> None:
    cache: Any = {h("k"): {"content_hash": h("a"), "size": 3, "at": 0}}
    hit = {"content_hash": h("a"), "size": 3}
    assert touch(cache, h("k"), hit, 2 * DAY_MS)
    assert cache[h("k")] == {"content_hash": h("a"), "size": 3, "at": 2 * DAY_MS}
    assert not touch(cache, h("k"), hit, 2 * DAY_MS + 1000)  # renewed today already
    assert touch(cache, h("from-ref"), hit, 5)  # a hit through the ref: an entry here


def test_no_touch_outside_a_stream_event(tmp_path: Path) -> None:
    table, _ = rocks_table(tmp_path)
    assert not touch(table, h("k"), {"content_hash": h("a"), "size": 1}, 5)


def test_the_read_sides_snapshot_stays_and_older_snapshots_go(aged: Aged) -> None:
    store = cast(Any, aged.store)
    old, new = put(aged, b"snapshot of yesterday"), put(aged, b"snapshot of now")
    name = snapshot_ref("devline-test.")
    asyncio.run(store.put_ref(name, new))  # the newest replaced the old one's ref
    aged.age("ref", name, 3)
    report = asyncio.run(sweep(store, Live(snapshots={name}), grace_s=GRACE_S,
                               dry_run=False))
    assert report.refs_kept == {"read-side snapshot": 1} and report.refs_deleted == 0
    assert asyncio.run(store.get(new)) == b"snapshot of now"
    assert asyncio.run(store.get(old)) is None
