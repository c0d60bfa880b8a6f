"""`devline tail TOPIC`: a topic's records, decoded, the way kcat and
kafka-console-consumer show them.

Without `--follow` it reads what the topic holds when it starts (from the beginning, or
from `--offset`/`--since`) and exits at its end; `--follow` keeps waiting for new records.
The choice of records (partitions, start, time range, key, event type) and their
formatting are plain functions here; only `read` talks to Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.markup import escape

from devline.cli.common import err, run_async, settings_of
from devline.errors import ConfigError

if TYPE_CHECKING:
    from devline.settings import Settings
    from schemas.codec import Codec


class Format(StrEnum):
    """How a record is printed."""

    json = "json"      # one JSON object per record: position, key, headers, type, value
    pretty = "pretty"  # one line per record: time, topic[partition]@offset, key, type, value
    raw = "raw"        # the value's bytes as they are, then a newline (kcat -f '%s\n')


_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
            "w": 7 * 86_400_000}


def parse_time(text: str, now_ms: int, *, option: str = "--since") -> int:
    """Epoch milliseconds of `text`: a duration before now (`10m`, `2h`, `1d`, `90s`),
    an ISO 8601 time (`2026-12-05T23:00:00Z`; without a zone it is UTC) or epoch ms."""
    value = text.strip()
    found = _RELATIVE.fullmatch(value.lower())
    if found:
        return now_ms - int(float(found.group(1)) * _UNIT_MS[found.group(2)])
    if value.isdigit():
        return int(value)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected a duration before now (10m, 2h, 1d), "
                          "an ISO 8601 time (2026-12-05T23:00:00Z) or epoch milliseconds"
                          ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class Start:
    """Where each partition starts: `beginning`, `end`, an offset, or `-N` (the last N)."""

    kind: str  # "beginning" | "end" | "offset" | "last" | "time"
    value: int = 0

    @classmethod
    def parse(cls, text: str) -> Start:
        word = text.strip().lower()
        if word in ("beginning", "earliest"):
            return cls("beginning")
        if word in ("end", "latest"):
            return cls("end")
        if re.fullmatch(r"-\d+", word):
            return cls("last", int(word[1:]))
        if word.isdigit():
            return cls("offset", int(word))
        raise ConfigError(f"--offset {text!r}: expected beginning, end, an offset (42) or "
                          "-N for the last N records of each partition")


def start_offset(start: Start, begin: int, end: int, by_time: int | None = None) -> int:
    """The offset to read from in a partition holding offsets [begin, end)."""
    match start.kind:
        case "beginning":
            at = begin
        case "end":
            at = end
        case "offset":
            at = start.value
        case "last":
            at = end - start.value
        case "time":  # the first record at or after the time, else the end
            at = end if by_time is None else by_time
        case _:
            raise AssertionError(start.kind)
    return min(max(at, begin), end)


@dataclass(frozen=True)
class Filter:
    """Which records to print; every condition given must hold."""

    keys: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None

    def wants_position(self, timestamp: int) -> bool:
        """The record's time is inside [since, until]."""
        return ((self.since_ms is None or timestamp >= self.since_ms)
                and (self.until_ms is None or timestamp <= self.until_ms))

    def wants(self, key: str | None, event_type: str | None, timestamp: int) -> bool:
        return (self.wants_position(timestamp)
                and (not self.keys or key in self.keys)
                and (not self.types or event_type in self.types))


def header(record: Any, name: str) -> str | None:
    for k, v in record.headers or ():
        if k == name:
            return bytes(v).decode("utf-8", "replace")
    return None


def iso_ms(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def pretty_line(view: dict[str, Any]) -> str:
    """One human line: time, topic[partition]@offset, key, type, value (compact JSON)."""
    where = f"{view['topic']}[{view['partition']}]@{view['offset']}"
    body = (json.dumps(view["value"], default=str, separators=(",", ":"))
            if "value" in view else f"undecodable: {view.get('error')}")
    return (f"{iso_ms(view['timestamp'])}  {where}  {view['key'] or '-'}  "
            f"{view['type'] or '?'}  {body}")


def render(fmt: Format, view: dict[str, Any] | None, value: bytes | None) -> bytes:
    """The bytes to print for one record (with its newline)."""
    match fmt:
        case Format.raw:
            return (value or b"") + b"\n"
        case Format.json:
            return (json.dumps(view, default=str) + "\n").encode()
        case Format.pretty:
            assert view is not None
            return (pretty_line(view) + "\n").encode()


async def read(settings: Settings, topic: str, *, partitions: Sequence[int] | None,
               start: Start, since_ms: int | None, follow: bool, idle: float
               ) -> AsyncGenerator[Any, None]:
    """The topic's records from `start` (or `since_ms`) in the chosen partitions."""
    from aiokafka import TopicPartition

    from devline.errors import BrokerUnavailable
    from streams.client import records, started_consumer, topic_partitions

    name = settings.topic(topic)
    consumer = await started_consumer(settings)
    try:
        if name not in await consumer.topics():
            raise BrokerUnavailable(f"topic {name} does not exist (run `devline topics create`)")
        every = [tp.partition for tp in await topic_partitions(consumer, name)]
        chosen = list(every) if not partitions else sorted(set(partitions))
        unknown = [p for p in chosen if p not in every]
        if unknown:
            raise ConfigError(f"--partition {unknown[0]}: {name} has partitions "
                              f"0-{len(every) - 1}")
        tps = [TopicPartition(name, p) for p in chosen]
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        found: dict[Any, Any] = {}
        if since_ms is not None:
            found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        offsets = {tp.partition: start_offset(
            start, begins[tp], ends[tp],
            found[tp].offset if found.get(tp) is not None else None) for tp in tps}
    finally:
        await consumer.stop()
    stream = cast(AsyncGenerator[Any, None], records(
        settings, topic, start=offsets, follow=follow, idle_timeout=idle, partitions=chosen))
    async with contextlib.aclosing(stream):
        async for record in stream:
            yield record


async def print_records(settings: Settings, codec: Codec | None, topic: str, *,
                        partitions: Sequence[int] | None, start: Start, flt: Filter,
                        fmt: Format, count: int | None, follow: bool, idle: float) -> int:
    """Print the chosen records; return how many were printed."""
    from streams.client import decode_for_display

    printed = 0
    if count == 0:
        return printed
    stdout = sys.stdout.buffer
    stream = read(settings, topic, partitions=partitions, start=start,
                  since_ms=flt.since_ms, follow=follow, idle=idle)
    async with contextlib.aclosing(stream):  # stops the consumer when --count is reached
        async for record in stream:
            if not flt.wants_position(record.timestamp):
                continue
            key = record.key.decode("utf-8", "replace") if record.key is not None else None
            view = None
            if fmt is not Format.raw or flt.types:
                assert codec is not None
                view = decode_for_display(codec, record)
            kind = header(record, "event-type") or (view or {}).get("type")
            if not flt.wants(key, kind, record.timestamp):
                continue
            stdout.write(render(fmt, view, record.value))
            stdout.flush()
            printed += 1
            if count is not None and printed >= count:
                break
    return printed


def tail(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(
        help="Topic, e.g. devline.events or devline.plans (the topic prefix is added)")],
    count: Annotated[int | None, typer.Option(
        "--count", "-n", min=0, help="Stop after N records (else at the end of the topic, "
        "or never with --follow)")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep waiting for new records after the end (Ctrl-C stops); "
        "starts at the end unless --offset, --from-beginning or --since say otherwise")
    ] = False,
    from_beginning: Annotated[bool, typer.Option(
        "--from-beginning", help="Start at the oldest record (the default without "
        "--follow); same as --offset beginning")] = False,
    offset: Annotated[str | None, typer.Option(
        "--offset", "-o", help="Where each partition starts: beginning, end, an offset "
        "(42), or -N for the last N records of each partition")] = None,
    partition: Annotated[list[int] | None, typer.Option(
        "--partition", "-p", min=0, help="Read only this partition (repeatable)")] = None,
    since: Annotated[str | None, typer.Option(
        help="Only records written at or after this time: 10m, 2h, 1d (before now), "
        "2026-12-05T23:00:00Z (no zone: UTC) or epoch ms; reading starts there")] = None,
    until: Annotated[str | None, typer.Option(
        help="Only records written at or before this time (same forms as --since); with "
        "--follow, stop once it has passed")] = None,
    key: Annotated[list[str] | None, typer.Option(
        "--key", "-k", help="Only records with this key, e.g. a plan id (repeatable)")] = None,
    event_type: Annotated[list[str] | None, typer.Option(
        "--type", "-t", help="Only records of this event type (the event-type header, e.g. "
        "TaskCompleted; repeatable)")] = None,
    fmt: Annotated[Format, typer.Option(
        "--format", case_sensitive=False, help="json: one object per record (position, "
        "key, headers, type, value); pretty: one readable line per record; raw: the value's "
        "bytes as they are")] = Format.json,
    idle: Annotated[float, typer.Option(
        min=0.0, help="Without --follow: give up after this many seconds with nothing new, "
        "should the end never come")] = 5.0,
) -> None:
    """Print the records of TOPIC, decoded, and exit at its end (--follow: keep going).

    Undecodable records are shown as such. Examples:

      devline tail devline.events --count 5

      devline tail devline.events -f --type TaskCompleted --format pretty

      devline tail devline.events --key PLAN_ID --since 10m

      devline tail devline.events -p 3 -o -10
    """
    if offset is not None and (from_beginning or since is not None):
        err.print("[red]error:[/red] --offset goes alone, without --from-beginning or --since")
        raise typer.Exit(2)
    now = int(time.time() * 1000)
    try:
        since_ms = parse_time(since, now) if since is not None else None
        until_ms = parse_time(until, now, option="--until") if until is not None else None
        if offset is not None:
            start = Start.parse(offset)
        elif since_ms is not None:
            start = Start("time")
        elif from_beginning or not follow:
            start = Start("beginning")
        else:
            start = Start("end")
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if since_ms is not None and until_ms is not None and until_ms < since_ms:
        err.print("[red]error:[/red] --until is before --since")
        raise typer.Exit(2)
    settings = settings_of(ctx)
    flt = Filter(frozenset(key or ()), frozenset(event_type or ()), since_ms, until_ms)
    codec = None
    if fmt is not Format.raw or flt.types:
        from schemas.codec import Codec

        codec = Codec.from_settings(settings)

    async def go() -> None:
        job = print_records(settings, codec, topic, partitions=partition, start=start,
                            flt=flt, fmt=fmt, count=count, follow=follow, idle=idle)
        if follow and until_ms is not None:
            try:
                async with asyncio.timeout(max(until_ms - time.time() * 1000, 0) / 1000):
                    await job
            except TimeoutError:
                return  # --until has passed
        else:
            await job

    try:
        run_async(go())
    except BrokenPipeError:  # `devline tail ... | head` closed the pipe: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
