"""2 MB of garbage on every input topic of the processor (and a record as big as a topic
takes), on a real broker: each record is dead-lettered by reference (head in the DLQ, full
bytes in the artifact store), nothing crashes and a plan submitted after it completes;
`devline dlq` shows the reference and a redrive puts the full bytes back, or refuses when
the store does not have them."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.artifacts import LocalArtifactStore, sha256
from streams.client import send_raw
from streams.deadletters import REDRIVE_OF, Letter
from streams.edge.ports import Ports
from streams.emit import VALUE_HEAD, Emitter, dead_letter_headers
from tests.harness import raw_records, running_pipeline, submit, wait_for
from tests.test_dlq_e2e import dlq, wait_for_letters

BIG = 2 * 1024 * 1024
ORIGIN = [("origin", b"test")]
INPUTS = (T.PLANS, T.EVENTS, T.WORKERS, T.WORK_DEV)  # the processor's and the workers'
# What the run log of a pipeline that crashed somewhere says (supervisor, Faust, our edge).
CRASH_MARKS = ("exited with", "promoted its warm spare", "Crashed reason", "Traceback",
               "dead-lettering a record failed")


def garbage(size: int = BIG) -> bytes:
    return b"\xff" + os.urandom(size - 1)  # random, and never Avro's magic bytes


def send(settings: Settings, topic: str, key: bytes, value: bytes) -> None:
    asyncio.run(send_raw(settings, settings.topic(topic), key, value, ORIGIN))


def record_size(key: bytes | None, value: bytes | None, headers: Any) -> int:
    """What the producer counts against max_request_size (the topic's limit is the same)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers)))


def largest_value(settings: Settings, key: bytes, headers: Any) -> int:
    """The longest value a record with this key and headers may have."""
    return settings.max_message_bytes - record_size(key, b"", headers) - 8  # value's varint


def test_two_megabytes_of_garbage_on_every_input_is_dead_lettered_by_reference(
    topics: Settings, tmp_path: Path,
) -> None:
    settings = topics
    log = tmp_path / "run.log"
    values = {topic: garbage() for topic in INPUTS}
    largest = garbage(largest_value(settings, b"largest", ORIGIN))  # as big as it gets
    with running_pipeline(settings, workers=1, log=log):
        for topic, value in values.items():
            send(settings, topic, f"garbage-{topic}".encode(), value)
        send(settings, T.EVENTS, b"largest", largest)
        plan_id = submit(settings, {"project": "big", "name": "after garbage", "files": [
            {"path": "a.py", "content": "A = 1\n"},
            {"path": "b.py", "content": "from a import A\nB = A\n"}]})
        kind, _ = wait_for(settings, plan_id, {"PlanCompleted", "PlanRejected"}, timeout=90)
        wait_for_letters(settings, len(INPUTS) + 1, timeout=60)
        letters = [Letter.of(r) for r in raw_records(settings, T.DLQ, idle=0.5)]
        plans_letter = next(x for x in letters if x.source[0] == settings.topic(T.PLANS))
        shown = dlq(settings, "show", str(plans_letter.offset), "--json")
        shown_text = dlq(settings, "show", str(plans_letter.offset))

    assert kind == "PlanCompleted"
    store = LocalArtifactStore(settings.artifacts())
    assert len(letters) == len(INPUTS) + 1
    by_source = {x.source[0]: x for x in letters if x.key != b"largest"}
    assert set(by_source) == {settings.topic(t) for t in INPUTS}
    (big,) = (x for x in letters if x.key == b"largest")
    assert big.source[0] == settings.topic(T.EVENTS) and big.ref("value") == sha256(largest)
    assert big.size("value") == len(largest) and store.get_sync(sha256(largest)) == largest
    inline = [(k, v) for k, v in big.headers if not k.startswith("dlq-value-")]
    assert record_size(big.key, largest, inline) > settings.max_message_bytes  # by value: never
    for topic, value in values.items():
        letter = by_source[settings.topic(topic)]
        assert str(letter.header("dlq-reason")).startswith("undecodable"), letter.headers
        assert letter.source[1] is not None and letter.source[1] >= 0
        assert letter.key == f"garbage-{topic}".encode()
        assert letter.value == value[:VALUE_HEAD]
        assert letter.header("dlq-value-ref") == f"sha256:{sha256(value)}"
        assert letter.header("dlq-value-size") == str(BIG)
        assert letter.header("dlq-value-truncated") == "true"
        assert store.get_sync(sha256(value)) == value

    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["value_ref"] == sha256(values[T.PLANS]) and view["value_size"] == BIG
    assert view["value_in_store"] is True and view["value_inline_bytes"] == VALUE_HEAD
    assert view["type"] is None and view["raw_size"] == BIG
    assert shown_text.returncode == 0, shown_text.stderr
    assert (f"value by reference: sha256:{sha256(values[T.PLANS])}, {BIG} bytes (first "
            f"{VALUE_HEAD} in the letter); full bytes in the artifact store: yes"
            ) in shown_text.stdout

    run_log = log.read_text(errors="replace")
    assert run_log.count("dead-lettering ") == len(INPUTS) + 1, run_log[-3000:]
    for mark in CRASH_MARKS:
        assert mark not in run_log, f"{mark!r} in the run log:\n{run_log[-3000:]}"


def dead_letterer(settings: Settings) -> Ports:
    """The processor's dead-letter path (`Ports.publish_dead_letter`) on a real producer."""
    async def send_now(topic: str, *, key: bytes | None, value: bytes | None,
                       partition: int | None, headers: list[tuple[str, bytes]]) -> None:
        await send_raw(settings, topic, key, value, headers, partition)

    codec = Codec.from_settings(settings)
    tables: Any = ({}, {}, {}, {})
    return Ports(settings, codec, Emitter(settings, codec, send_now),
                 LocalArtifactStore(settings.artifacts()), *tables)


def test_a_redrive_republishes_the_full_bytes_or_refuses_without_them(topics: Settings) -> None:
    settings = topics
    store = LocalArtifactStore(settings.artifacts())
    big_key = b"k" * 20_000  # keys go by reference past 16 KiB too
    # As big as a record republished to its topic may be: inline, with the dead letter's
    # headers, it could never have been sent to the DLQ.
    plans_value = garbage(largest_value(settings, big_key, [(REDRIVE_OF, b"x" * 64)]))
    workers_value = garbage()

    def headers(topic: str) -> list[tuple[str, bytes]]:
        return dead_letter_headers("undecodable: " + "x" * 500, topic=settings.topic(topic),
                                   partition=0, offset=0)

    assert record_size(big_key, plans_value, headers(T.PLANS)) > settings.max_message_bytes

    async def dead_letter_both() -> None:
        ports = dead_letterer(settings)
        for topic, key, value in ((T.PLANS, big_key, plans_value),
                                  (T.WORKERS, b"w", workers_value)):
            await ports.publish_dead_letter(value, key, headers(topic))

    asyncio.run(dead_letter_both())
    plans_at, workers_at = (str(x.offset) for x in wait_for_letters(settings, 2))
    store.path_for(sha256(workers_value)).unlink()  # the store lost it

    dry = dlq(settings, "redrive", "--dry-run", plans_at, workers_at)
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert f"offset {plans_at}: would republish to {settings.topic(T.PLANS)}" in dry.stdout
    assert f"offset {workers_at}: refused - " in dry.stdout

    first = dlq(settings, "redrive", plans_at, workers_at)
    assert first.returncode == 1, first.stdout + first.stderr
    out = " ".join(first.stdout.split())
    assert f"offset {plans_at}: redriven - republished to {settings.topic(T.PLANS)}" in out
    assert (f"offset {workers_at}: refused - letter at offset {workers_at} holds the first "
            f"{VALUE_HEAD} of {BIG} bytes of its value; the full value "
            f"sha256:{sha256(workers_value)} is not in the artifact store at "
            f"{settings.artifacts()}") in out
    assert "nothing republished (the truncated copy never is)" in out
    shown = " ".join(dlq(settings, "show", workers_at).stdout.split())
    assert "full bytes in the artifact store: no (" in shown

    back = [r for r in raw_records(settings, T.PLANS) if dict(r.headers).get(REDRIVE_OF)]
    assert len(back) == 1 and back[0].value == plans_value and back[0].key == big_key
    assert not any(dict(r.headers).get(REDRIVE_OF) for r in raw_records(settings, T.WORKERS))

    store.put_sync(workers_value)  # found again: the refused letter may be redriven now
    again = dlq(settings, "redrive", plans_at, workers_at)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"offset {plans_at}: skipped - already redriven" in again.stdout
    assert f"offset {workers_at}: redriven - republished to" in again.stdout
    back = [r for r in raw_records(settings, T.WORKERS) if dict(r.headers).get(REDRIVE_OF)]
    assert len(back) == 1 and back[0].value == workers_value and back[0].key == b"w"
