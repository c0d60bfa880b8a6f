"""Dead letters by reference, without a broker: big originals go to the artifact store and
the DLQ gets their head and hash; store-then-send survives a crash between the two; a
redrive gets the full bytes back or refuses."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from devline.settings import Settings
from streams import topics as T
from streams.deadletters import Letter, OriginalMissing, decide, original, originals
from streams.edge.fake import CrashPlan, FakeStore
from streams.edge.ports import RawRecord
from streams.emit import (
    KEY_HEAD,
    KEY_INLINE_MAX,
    VALUE_HEAD,
    VALUE_INLINE_MAX,
    by_reference,
    dead_letter_headers,
)
from tests.sim import Sim

MAX = Settings.from_env({}).max_message_bytes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def letter_of(rec: RawRecord) -> Letter:
    return Letter(rec.partition, rec.offset, 0, rec.key, rec.value, tuple(rec.headers))


def worst_headers(topic: str = "devline.events") -> list[tuple[str, bytes]]:
    # The longest reason dead_letter_headers keeps, in 4-byte characters.
    return dead_letter_headers("\U0001f4a5" * 5000, topic=topic, partition=11,
                               offset=2**62, attempt=99, fingerprint="f" * 64,
                               event_type="TaskFailed")


# -- the pure decision -------------------------------------------------------------------
def test_small_values_and_keys_go_inline_as_they_are() -> None:
    hdrs = worst_headers()
    for value in (None, b"", b"junk", os.urandom(VALUE_INLINE_MAX)):
        letter = by_reference(value, b"k", hdrs)
        assert (letter.value, letter.key, letter.headers, letter.originals) == \
            (value, b"k", hdrs, ())


def test_a_big_value_goes_by_reference_with_its_head_size_and_hash() -> None:
    value = os.urandom(VALUE_INLINE_MAX + 1)
    letter = by_reference(value, b"k", [("dlq-reason", b"undecodable")])
    assert letter.value == value[:VALUE_HEAD] and letter.key == b"k"
    assert letter.originals == (value,)
    assert letter.headers == [("dlq-reason", b"undecodable"),
                              ("dlq-value-ref", f"sha256:{sha(value)}".encode()),
                              ("dlq-value-size", str(len(value)).encode()),
                              ("dlq-value-truncated", b"true")]
    read = Letter(0, 7, 0, letter.key, letter.value, tuple(letter.headers))
    assert read.ref("value") == sha(value) and read.size("value") == len(value)
    assert read.truncated and read.ref("key") is None and read.size("key") == 1
    row = read.row(0, None)
    assert row["value_ref"] == sha(value) and row["value_size"] == len(value)


def test_nothing_near_max_message_bytes_makes_a_dead_letter_too_big() -> None:
    # The largest record a topic accepts, with the largest key it could carry, plus the
    # biggest headers a dead letter gets: what is sent stays far below every limit.
    value = os.urandom(MAX - 64)
    key = os.urandom(MAX // 2)
    letter = by_reference(value, key, worst_headers())
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        letter.key, letter.value, list(letter.headers))
    assert size < VALUE_INLINE_MAX + KEY_INLINE_MAX + 32 * 1024 < 1024 * 1024 < MAX
    assert len(letter.value or b"") == VALUE_HEAD and len(letter.key or b"") == KEY_HEAD
    assert letter.originals == (value, key)
    read = Letter(0, 0, 0, letter.key, letter.value, tuple(letter.headers))
    assert (read.ref("key"), read.size("key")) == (sha(key), len(key))

    async def back() -> tuple[bytes | None, bytes | None]:
        store = FakeStore(CrashPlan())
        for blob in letter.originals:
            await store.put(blob)
        return await originals(read, store)

    assert asyncio.run(back()) == (key, value)


# -- through the processor's edge (in-memory ports) ---------------------------------------
def big_garbage(size: int = MAX - 1024) -> bytes:
    return b"\xff" + os.urandom(size - 1)  # never Avro's magic bytes


async def _reject_into_dlq(crash_at: set[int], value: bytes) -> Sim:
    sim = Sim(crash_at=crash_at)
    sim.log.append(T.EVENTS, b"garbage", value)
    await sim.run(lambda s: bool(s.log.topics[T.DLQ]) and s.pos >= 1)
    return sim


def test_a_garbage_record_near_the_limit_is_dead_lettered_by_reference() -> None:
    value = big_garbage()
    sim = asyncio.run(_reject_into_dlq(set(), value))
    assert sim.crash.trace[:2] == [f"store {sha(value)[:12]}", f"send {T.DLQ}"]
    (rec,) = sim.log.topics[T.DLQ]
    letter = letter_of(rec)
    assert str(letter.header("dlq-reason")).startswith("undecodable")
    assert letter.source == (T.EVENTS, 0, 0)
    assert rec.value == value[:VALUE_HEAD] and letter.header("dlq-value-truncated") == "true"
    assert letter.ref("value") == sha(value) and letter.size("value") == len(value)
    assert sim.store.blobs[sha(value)] == value
    assert asyncio.run(original(letter, "value", sim.store)) == value


@pytest.mark.parametrize("crash_at", [1, 2], ids=["before the store", "before the send"])
def test_a_crash_between_store_and_send_redoes_both(crash_at: int) -> None:
    value = big_garbage(3 * 1024 * 1024)
    sim = asyncio.run(_reject_into_dlq({crash_at}, value))
    assert sim.crash.crashes == 1 and sim.restarts == 1
    (rec,) = sim.log.topics[T.DLQ]  # one letter: sent once, after the store had the bytes
    assert letter_of(rec).ref("value") == sha(value)
    assert list(sim.store.blobs) == [sha(value)] and sim.store.blobs[sha(value)] == value


def test_a_dead_task_with_a_huge_failure_is_dead_lettered_by_reference() -> None:
    error = "x" * (VALUE_INLINE_MAX + 10_000)  # an executor's error message, kept whole

    async def go() -> Sim:
        sim = Sim()
        external = sim.external

        def with_output(event_type: str, record: dict[str, Any], *args: Any) -> RawRecord:
            if event_type == "TaskFailed":
                record = {**record, "error": error}
            return external(event_type, record, *args)

        sim.external = with_output  # type: ignore[assignment]
        sim.submit({"plan_id": "p1", "project": "p", "name": "p", "files": [
            {"path": "a.py", "content": "A = 1\n", "simulate": {"fail_first": 9}}]})
        await sim.run(lambda s: bool(s.log.topics[T.DLQ])
                      and s.pos >= len(s.log.topics[T.EVENTS]))
        return sim

    sim = asyncio.run(go())
    (rec,) = sim.log.topics[T.DLQ]
    letter = letter_of(rec)
    assert letter.is_task and letter.task_id == "a.py" and letter.attempt == 3
    digest = letter.ref("value")
    assert digest is not None and len(rec.value or b"") == VALUE_HEAD
    full = asyncio.run(original(letter, "value", sim.store))
    assert full is not None and sha(full) == digest
    event_type, failed = sim.codec.decode(full)
    assert event_type == "TaskFailed" and failed["error"] == error


# -- redrive: the full bytes or nothing ---------------------------------------------------
class TamperedStore(FakeStore):
    async def get(self, digest: str) -> bytes | None:
        data = await super().get(digest)
        return None if data is None else data[:-1] + bytes([data[-1] ^ 1])


def test_a_redrive_gets_the_full_bytes_back_or_refuses() -> None:
    value = big_garbage(2 * 1024 * 1024)
    sent = by_reference(value, b"poison", dead_letter_headers(
        "undecodable: bad magic", topic="devline.plans", partition=0, offset=3))
    letter = Letter(0, 5, 0, sent.key, sent.value, tuple(sent.headers))
    assert decide(letter, {}, {}, 0).action == "republish"

    async def go() -> None:
        store = FakeStore(CrashPlan())
        with pytest.raises(OriginalMissing, match=r"letter at offset 5 holds the first 65536 "
                           r"of 2097152 bytes of its value; the full value sha256:[0-9a-f]{64} "
                           r"is not in the artifact store"):
            await originals(letter, store)
        await store.put(value)
        assert await originals(letter, store) == (b"poison", value)
        tampered = TamperedStore(CrashPlan())
        await tampered.put(value)
        with pytest.raises(OriginalMissing, match="does not match what the artifact store"):
            await original(letter, "value", tampered)

    asyncio.run(go())
    # A small letter needs no store at all.
    small = Letter(0, 6, 0, b"k", b"junk", ())
    assert asyncio.run(originals(small, FakeStore(CrashPlan()))) == (b"k", b"junk")
