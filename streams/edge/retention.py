"""Retention: nothing in the live tables stays forever.

- Finished plans past `plan_retention_s` are asked to leave the tables with a PlanRetired
  each, which the fold carries out (so a replay of the log retires them too).
- Cache entries unused for `cache_retention_s` (default 30 days) are deleted (a tombstone
  in the `cache` changelog). An entry's `at` is when it was written or last hit; one
  written before entries had `at` counts as written when this processor started. The
  cache is not part of the fold (it is an effect), so its entries are deleted here, and
  a sweep reads one slice of it: cache keys are sha256 hex, so the keys starting with one
  of 256 two-digit prefixes are 1/256 of the table; a sweep reads prefixes until it has
  examined `CACHE_SCAN` entries or deleted `CACHE_BATCH`, and the next one goes on from
  there. Synchronous between awaits, so no event's effects interleave with it.
  The ref in the artifact store stays (other processors read it): `devline gc` deletes
  refs whose entry is gone.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

from faust.streams import current_event

from agents.scheduling import fold as F
from agents.scheduling.model import decision_id
from streams.edge.persist import persist
from streams.edge.ports import Ports, Table
from streams.edge.state import RocksStore

log = logging.getLogger("devline.scheduler")

SWEEP_EVERY_S = 60.0  # at most this long between sweeps
REMEMBERED = 10_000   # plans asked for and not yet read back (a bound, not a target)
CACHE_RETENTION_S = 30 * 86400.0  # until Settings has `cache_retention_s`
CACHE_SCAN = 5_000    # cache entries a sweep examines (at least one prefix's worth)
CACHE_BATCH = 1_000   # cache entries a sweep deletes at most
PREFIXES = tuple(f"{i:02x}" for i in range(256))
TOUCH_EVERY_MS = 86_400_000  # a hit renews `at` at most daily: a hot key, one write a day


class Retention:
    def __init__(self, ports: Ports, cache_retention_s: float | None = None) -> None:
        self.ports = ports
        self.asked: OrderedDict[str, None] = OrderedDict()
        self.started_ms = ports.now_ms()  # entries without `at` count from here
        self.cache_retention_s = cache_retention_s or float(getattr(
            ports.settings, "cache_retention_s", CACHE_RETENTION_S))
        self.prefix = 0  # index into PREFIXES where the next cache sweep starts
        self.expired = 0  # cache entries deleted since the start

    def due(self, tick: int) -> bool:
        every = min(SWEEP_EVERY_S, self.ports.settings.plan_retention_s / 2)
        return tick % max(1, int(every)) == 0

    async def sweep(self) -> int:
        """A PlanRetired for each finished plan past its retention; how many were asked."""
        p = self.ports
        now = p.now_ms()
        keep = int(p.settings.plan_retention_s * 1000)
        asked = 0
        for plan_id, header in list(p.plans.items()):
            if plan_id in self.asked or not F.retirable(header, now, keep):
                continue
            finished = int(header["completed_at"])
            await persist(partial(p.publish, "PlanRetired", {
                "event_id": decision_id(plan_id, finished, "retire"), "plan_id": plan_id,
                "status": str(header["status"]), "finished_at": finished, "retired_at": now}),
                what=f"retiring plan {plan_id}", log=log, sleep=p.sleep)
            self.asked[plan_id] = None
            asked += 1
            log.info("plan %s finished %.1f h ago: retired from the tables", plan_id,
                     (now - finished) / 3_600_000)
        while len(self.asked) > REMEMBERED:
            self.asked.popitem(last=False)
        self.expire_cache()
        return asked

    def expire_cache(self) -> int:
        """Delete the cache entries of the next slice that nobody used for
        `cache_retention_s`; how many."""
        cache = self.ports.cache
        now = self.ports.now_ms()
        keep = int(self.cache_retention_s * 1000)
        listed = prefix_lister(cache)
        examined = deleted = 0
        for _ in PREFIXES:  # at most one lap per sweep
            for key in listed(PREFIXES[self.prefix]):
                examined += 1
                if now - last_used(cache.get(key), self.started_ms) > keep:
                    forget(cache, key)
                    deleted += 1
                    if deleted >= CACHE_BATCH:
                        break  # this prefix again next time: it may hold more
            if deleted >= CACHE_BATCH:
                break
            self.prefix = (self.prefix + 1) % len(PREFIXES)
            if examined >= CACHE_SCAN:
                break
        if deleted:
            self.expired += deleted
            log.info("cache: %d entries unused for %.1f days deleted (%d examined)", deleted,
                     self.cache_retention_s / 86400, examined)
        return deleted


def touch(cache: Table, key: str, hit: dict[str, Any], now_ms: int) -> bool:
    """A cache hit: note its use (`at`) in the table, at most once a day; written in the
    partition of the event being handled, so a hit through the store's ref (an entry of
    another processor's partition) keeps an entry here too, and with it the ref. A Faust
    table cannot be written outside a stream event (recovery): then nothing is noted."""
    entry = cache.get(key)
    if isinstance(entry, dict) and now_ms - last_used(entry, 0) < TOUCH_EVERY_MS:
        return False
    if hasattr(cache, "send_changelog") and current_event() is None:
        return False
    cache[key] = {"content_hash": hit["content_hash"], "size": int(hit.get("size") or 0),
                  "at": now_ms}
    return True


def last_used(entry: Any, default_ms: int) -> int:
    """When a cache entry was written or last hit (`at`, ms); `default_ms` if it has none.
    A missing entry counts as used now-ish (`default_ms`): nothing to delete."""
    if not isinstance(entry, dict):
        return default_ms
    try:
        return int(entry.get("at") or default_ms)
    except (TypeError, ValueError):
        return default_ms


def prefix_lister(table: Table) -> Callable[[str], list[str]]:
    """`keys(prefix)` for the table: a seek per partition on RocksDB; else the keys are
    grouped by their first two characters in one pass (memory store, test fakes)."""
    store = getattr(table, "data", None)
    if isinstance(store, RocksStore):
        return store.prefix_keys
    groups: dict[str, list[str]] = {}
    for key in list(table.keys()):
        if isinstance(key, str):
            groups.setdefault(key[:2], []).append(key)
    return lambda prefix: groups.get(prefix, [])


def forget(table: Table, key: str) -> None:
    """Delete `key` outside a stream event. A Faust table sends a delete to the changelog
    partition of the event being handled, and there is none here: the tombstone goes to
    each of this processor's partitions that holds the key, and the key leaves the store."""
    send = getattr(table, "send_changelog", None)
    store = getattr(table, "data", None)
    if send is None or store is None:
        del table[key]  # a plain mapping (the in-memory ports)
        return
    for partition in _holding(table, store, key):
        send(partition, key, None, value_serializer="raw")
    if isinstance(store, RocksStore):
        store._del(store._encode_key(key))  # every partition's database
    else:
        store.data.pop(key, None)
        getattr(store, "_key_partition", {}).pop(key, None)


def _holding(table: Any, store: Any, key: str) -> list[int]:
    if isinstance(store, RocksStore):
        raw = store._encode_key(key)
        return [p for p, db in store._active_partitions() if db.get(raw) is not None]
    known = getattr(store, "_key_partition", {}).get(key)
    if known is not None:
        return [int(known)]
    # Written live in a memory store: its partition is not recorded. A tombstone in a
    # partition without the key deletes nothing, so each active partition gets one.
    topic = table.changelog_topic_name
    return sorted({tp.partition for tp in table.app.assignor.assigned_actives()
                   if tp.topic == topic})
