"""`devline reset` against the real broker: what it would do at a time, and bad flags."""

from __future__ import annotations

import asyncio

from devline.settings import Settings
from streams import topics as T
from streams.client import records, send_raw
from tests.test_replay_e2e import cli


def test_reset_to_a_time_lists_the_offsets_it_would_set(topics: Settings) -> None:
    async def send(n: int) -> list[tuple[int, int]]:
        return [await send_raw(topics, topics.topic(T.EVENTS), b"k", b"x", [], partition=0)
                for _ in range(n)]

    sent = asyncio.run(send(3))

    async def stamps() -> list[int]:
        return [r.timestamp async for r in records(topics, T.EVENTS, idle_timeout=1.0)
                if r.partition == 0]

    times = asyncio.run(stamps())
    second = times[1]
    want = sent[min(i for i, t in enumerate(times) if t >= second)][1]
    dry = cli(topics, "reset", "--to-datetime", str(second), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    line = next(x for x in dry.stdout.splitlines() if topics.topic(T.EVENTS) in x)
    assert f"p0: none -> {want}," in line  # the first record at or after the time
    assert "p1: none -> 0" in line  # an empty partition: its end
    assert "keep the tables" in dry.stdout and "delete topic" not in dry.stdout


def test_reset_wants_exactly_one_target(topics: Settings) -> None:
    both = cli(topics, "reset", "--to-earliest", "--to-datetime", "0", "--dry-run")
    neither = cli(topics, "reset", "--dry-run")
    bad = cli(topics, "reset", "--to-datetime", "last tuesday", "--dry-run")
    assert both.returncode == neither.returncode == bad.returncode == 2
    assert "one of --to-earliest and --to-datetime" in neither.stderr
    assert "not a time" in bad.stderr
