"""A plan's state as views over the `plans` and `tasks` tables (keys `plan_id/task_id`), and
the stores those tables live in (`Settings.table_store`).

Two things hold whatever the store:

- **Listing one plan's tasks costs that plan's tasks**, not the table's: the stores below
  answer `prefix_keys("plan_id/")` with a prefix seek (RocksDB) or an index (memory).
- **A redelivered event writes its own records again.** The fold skips a record whose `seq`
  says the event already changed it. With a store on disk, a crash after the local write
  and before the changelog has it leaves exactly such a record behind, only locally; a
  processor that recovers from the changelog (another machine, a wiped disk) would lack
  it. So after the fold, every record read with `seq` equal to the event's own position
  that the fold did not write is written again (`save_header`): the same value, only on
  redelivery (a first delivery finds older records).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol, runtime_checkable

import faust
from faust.stores import STORES
from faust.stores import memory as faust_memory
from faust.stores import rocksdb as faust_rocksdb
from faust.streams import current_event

from agents.scheduling.fold import PlanState
from streams.edge.ports import Table


@runtime_checkable
class PrefixListing(Protocol):
    """A store that lists the keys starting with a prefix without scanning the others."""

    def prefix_keys(self, prefix: str) -> list[str]: ...


def keys_with_prefix(table: Table, prefix: str) -> list[str]:
    """The table's keys that start with `prefix`: from its store's listing when it has one
    (a Faust table's store is `table.data`), else by scanning every key (the test fakes)."""
    for store in (getattr(table, "data", None), table):
        if isinstance(store, PrefixListing):
            return store.prefix_keys(prefix)
    return [k for k in list(table.keys()) if k.startswith(prefix)]


class TaskView(MutableMapping[str, Any]):
    """One plan's tasks inside the `tasks` table. Reads return copies; writes go through.
    Remembers what it read and wrote, for `rewrite_own`.

    A view lives for one event's fold and effects, while nothing else writes the plan's
    tasks (the processor's `handling` lock), so a task read again before the view writes it
    is the value read or written before: kept, not looked up and decoded again (an event
    read each of its tasks 2-4 times: fold, effects, board post)."""

    def __init__(self, table: Table, plan_id: str) -> None:
        self._table = table
        self._prefix = f"{plan_id}/"
        self._read: dict[str, Any] = {}
        self._written: set[str] = set()
        self._fresh: dict[str, Any] = {}  # read, and not written since: the table's value

    def __getitem__(self, task_id: str) -> Any:
        value = self._fresh.get(task_id)
        if value is None:
            value = self._table.get(self._prefix + task_id)
            if value is None:
                raise KeyError(task_id)
            self._fresh[task_id] = value
        self._read[task_id] = value
        return dict(value)

    def __setitem__(self, task_id: str, value: Any) -> None:
        self._written.add(task_id)
        self._table[self._prefix + task_id] = value
        # Read back as written (a copy: the caller may go on changing its dict), not looked
        # up and decoded again: the fold writes a task, then its effects read it.
        self._fresh[task_id] = dict(value)

    def __delitem__(self, task_id: str) -> None:
        self._written.add(task_id)
        self._fresh.pop(task_id, None)
        del self._table[self._prefix + task_id]

    def __iter__(self) -> Iterator[str]:
        n = len(self._prefix)
        return iter([k[n:] for k in keys_with_prefix(self._table, self._prefix)])

    def __len__(self) -> int:
        return len(keys_with_prefix(self._table, self._prefix))

    def rewrite_own(self, seq: int) -> int:
        """Write again each task read since this view was made whose record says the event
        at `seq` already wrote it, unless it was written (or deleted) here; how many."""
        again = [t for t, v in self._read.items()
                 if t not in self._written and int(v.get("seq", -1)) == seq]
        for task_id in again:
            self._table[self._prefix + task_id] = self._read[task_id]
        return len(again)


def plan_state(plans: Table, tasks: Table, plan_id: str) -> PlanState:
    """The plan as the tables hold it: a copy of the header, a live view of the tasks."""
    header = plans.get(plan_id)
    return PlanState(dict(header) if header else {}, TaskView(tasks, plan_id))


def save_header(plans: Table, state: PlanState, before: dict[str, Any] | None,
                seq: int | None = None) -> None:
    """Write the header back if the fold changed it (delete it if the fold cleared it), and
    write again whatever a redelivered event finds it wrote before (see the module doc).

    `seq` is the event's log position; by default the last one the fold used
    (`state.clock`, which `apply` sets to the event's position)."""
    seq = state.clock if seq is None else seq
    if state.header and state.header != before:
        plans[state.header["plan_id"]] = dict(state.header)
    elif before and not state.header:
        del plans[before["plan_id"]]
    elif state.header and state.header.get("seq") == seq:
        plans[state.header["plan_id"]] = dict(state.header)  # redelivered: again
    if isinstance(state.tasks, TaskView):
        state.tasks.rewrite_own(seq)


_GONE = object()


class HeldHeaders(MutableMapping[str, Any]):
    """The `plans` table with its writes held while a batch of events is folded and written
    once at its end (`flush`): a plan's header changes with nearly every event, and a batch
    often holds many events of one plan. Reads see the held values, so the fold and
    anything running meanwhile read what the batch wrote. Outside a batch writes go through.
    The batch's offsets are committed only after the flush (it runs before the batch's
    sends are awaited), so a crash before it redoes the batch like any other write."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.held: dict[str, Any] = {}
        self.holding = False

    def get(self, key: str, default: Any = None, /) -> Any:
        if key in self.held:
            value = self.held[key]
            return default if value is _GONE else value
        return self.table.get(key, default)

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _GONE)
        if value is _GONE:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if self.holding:
            self.held[key] = value
        else:
            self.held.pop(key, None)
            self.table[key] = value

    def __delitem__(self, key: str) -> None:
        if self.holding:
            self.held[key] = _GONE
        else:
            self.held.pop(key, None)
            del self.table[key]

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self.items()])

    def __len__(self) -> int:
        return len(list(self.items()))

    def items(self) -> Any:
        out = {k: v for k, v in self.table.items() if k not in self.held}
        out.update((k, v) for k, v in self.held.items() if v is not _GONE)
        return out.items()

    def flush(self) -> int:
        """Write what is held (in the order first held); how many writes."""
        held, self.held = self.held, {}
        for key, value in held.items():
            if value is _GONE:
                if self.table.get(key) is not None:
                    del self.table[key]
            else:
                self.table[key] = value
        return len(held)


def split_key(key: str) -> tuple[str, str]:
    plan_id, _, task_id = key.partition("/")
    return plan_id, task_id


# -- stores -------------------------------------------------------------------------------
ROCKSDB_MEMORY = 64 * 1024 * 1024  # block cache of every table's databases, memtables included
MEMTABLE_SHARE = 0.5               # of that, at most this much unflushed writes
WRITE_BUFFER = 4 * 1024 * 1024     # one database's memtable; flushed to disk when full
OPEN_FILES = 64                    # per database (Faust's default is 90% of the process limit)
_shared: dict[str, Any] = {}       # one cache and write-buffer budget per process


def _rocksdb_options() -> Any:
    """Options for every table database: one RAM budget (block cache, memtables charged to
    it) shared by all, so memory does not grow with the number of plans or partitions."""
    import rocksdict

    if not _shared:
        cache = rocksdict.Cache(ROCKSDB_MEMORY)
        _shared["cache"] = cache
        _shared["writes"] = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            int(ROCKSDB_MEMORY * MEMTABLE_SHARE), False, cache)
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_max_open_files(OPEN_FILES)
    opts.set_write_buffer_size(WRITE_BUFFER)
    opts.set_max_write_buffer_number(2)
    opts.set_write_buffer_manager(_shared["writes"])
    opts.set_keep_log_file_num(2)
    blocks = rocksdict.BlockBasedOptions()
    blocks.set_block_cache(_shared["cache"])
    blocks.set_bloom_filter(10, False)
    blocks.set_cache_index_and_filter_blocks(True)  # index and filters count in the budget
    opts.set_block_based_table_factory(blocks)
    return opts


def _prefix_bytes(encode: Any, prefix: str) -> bytes:
    """The bytes every encoded key starting with `prefix` starts with (a JSON key is quoted:
    `"p/` for `"p/t"`), found as what two such keys' encodings share."""
    a, b = encode(prefix + "0"), encode(prefix + "1")
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return bytes(a[:n])


class RocksStore(faust_rocksdb.Store):
    """Faust's RocksDB store (one database per changelog partition under the app's table
    dir, each with the changelog offset it has applied, so a restart reads only what was
    written since) with three changes:

    - a key is found in whichever assigned partition holds it, as the memory store does.
      Faust's store reads only the partition of the event being handled, but the processor
      reads any plan's tasks from timers and other plans' events (the pump, leases);
    - keys are listed by prefix (`prefix_keys`) with one seek per partition;
    - databases share one RAM budget and are closed when revoked or stopped, so the same
      process (or the next one on this machine) can open them again at once.
    """

    def _open_for_partition(self, partition: int) -> Any:
        from rocksdict import AccessType, Rdict

        path = str(self.partition_path(partition))
        return Rdict(path, options=_rocksdb_options(), access_type=AccessType.read_write())

    _actives: frozenset[int] | None = None  # assigned active partitions, per rebalance

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any,
                           generation_id: int = 0) -> None:
        self._actives = None
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    def _active_partitions(self) -> list[tuple[int, Any]]:
        """The open databases of the partitions this process is assigned (not standbys)."""
        actives = self._actives
        if actives is None:
            topic = self.table.changelog_topic_name  # type: ignore[attr-defined]
            actives = frozenset(tp.partition for tp in self.app.assignor.assigned_actives()
                                if tp.topic == topic)
            self._actives = actives or None  # none yet: ask again next time
        return [(p, db) for p, db in self._dbs.items() if p in actives]

    def _dbs_for_actives(self) -> Iterator[Any]:
        return (db for _, db in self._active_partitions())

    def _get(self, key: bytes) -> bytes | None:
        for partition, db in self._find(key):
            value = db.get(key)
            if value is not None:
                self._key_index[key] = partition
                return value
        return None

    def _find(self, key: bytes) -> list[tuple[int, Any]]:
        dbs = dict(self._active_partitions())
        hint = self._key_index.get(key)
        if hint is None:
            event = current_event()
            hint = event.message.partition if event is not None else None
        first = [(hint, dbs.pop(hint))] if hint in dbs else []
        return first + list(dbs.items())

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = self._write_partition(key)
        self._db_for_partition(partition).put(key, value)
        self._key_index[key] = partition

    def _write_partition(self, key: bytes) -> int:
        """The changelog partition the table sends this write to: the current event's, or
        the key's hash for a table with its own partitioner."""
        if self.table.use_partitioner:
            topic = self.table.changelog_topic_name  # type: ignore[attr-defined]
            return int(self.app.producer.key_partition(topic, key).partition)
        event = current_event()
        if event is None:
            raise RuntimeError(f"table {self.table_name}: a write outside a stream event")
        return int(event.message.partition)

    def _del(self, key: bytes) -> None:
        for _, db in self._find(key):
            if db.get(key) is not None:
                db.delete(key)
        self._key_index.pop(key, None)

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        db = self._dbs.get(tp.partition)
        if db is not None:  # an ack that arrives after the partition was revoked: skip it
            db.put(self.offset_key, str(offset).encode())

    def prefix_keys(self, prefix: str) -> list[str]:
        start = _prefix_bytes(self._encode_key, prefix)
        keys: list[str] = []
        for _, db in self._active_partitions():
            for raw in db.keys(from_key=start):
                if not raw.startswith(start):
                    break
                key = self._decode_key(raw)
                if isinstance(key, str) and key.startswith(prefix):
                    keys.append(key)
        return keys

    def _close(self, partition: int) -> None:
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()

    def revoke_partitions(self, table: Any, tps: Any) -> None:
        for tp in tps:
            if tp.topic in table.changelog_topic.topics:
                self._close(tp.partition)

    async def stop(self) -> None:
        for partition in list(self._dbs):
            self._close(partition)
        self._key_index.clear()


class _PlanIndexed(dict[Any, Any]):
    """A dict that also indexes its `head/tail` keys by `head/`, for prefix listings."""

    def __init__(self) -> None:
        super().__init__()
        self.heads: dict[str, dict[str, None]] = {}

    @staticmethod
    def _head(key: Any) -> str | None:
        if isinstance(key, str) and "/" in key:
            return key[:key.index("/") + 1]
        return None

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        head = self._head(key)
        if head is not None:
            self.heads.setdefault(head, {})[key] = None

    def _unindex(self, key: Any) -> None:
        head = self._head(key)
        if head is not None and head in self.heads:
            self.heads[head].pop(key, None)
            if not self.heads[head]:
                del self.heads[head]

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._unindex(key)

    def pop(self, key: Any, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._unindex(key)
        return value

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self) -> None:
        super().clear()
        self.heads.clear()

    def with_prefix(self, prefix: str) -> list[str]:
        if self._head(prefix) == prefix:
            return list(self.heads.get(prefix, ()))
        return [k for k in self if isinstance(k, str) and k.startswith(prefix)]


class MemoryStore(faust_memory.Store):
    """Faust's memory store with its keys indexed by `plan_id/`, for `prefix_keys`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.data = _PlanIndexed()

    def prefix_keys(self, prefix: str) -> list[str]:
        data: _PlanIndexed = self.data  # type: ignore[assignment]
        return data.with_prefix(prefix)


class OneLookupTable(faust.Table):
    """Faust's table with a `get` that asks its store once. `Mapping.get` on a Faust table
    tests membership and then reads: two RocksDB lookups for every read of the edge."""

    def get(self, key: Any, default: Any = None, /) -> Any:
        self.on_key_get(key)
        try:
            return self.data[key]
        except KeyError:
            return self.default() if self.default is not None else default


STORE_URLS = {"rocksdb": "devline-rocksdb://", "memory": "devline-memory://"}


def table_store(kind: str) -> str:
    """The Faust store URL for `Settings.table_store` (our stores, registered under their
    own schemes in Faust's store registry)."""
    STORES["devline-rocksdb"] = f"{__name__}:RocksStore"
    STORES["devline-memory"] = f"{__name__}:MemoryStore"
    return STORE_URLS[kind]
