"""When a worker heartbeats at once, not at its next periodic heartbeat."""

from __future__ import annotations

import pytest

from streams.worker import beat_now


@pytest.mark.parametrize(("before", "after"), [
    ("starting", "idle"), ("starting", "busy"), ("idle", "draining"), ("busy", "draining"),
    ("busy", "stopped")])
def test_news_for_the_dispatcher_is_sent_at_once(before: str, after: str) -> None:
    assert beat_now(before, after)


@pytest.mark.parametrize(("before", "after"), [
    ("idle", "busy"), ("busy", "idle"), ("idle", "idle"), ("busy", "busy")])
def test_a_task_starting_or_finishing_waits_for_the_periodic_heartbeat(before: str, after: str
                                                                       ) -> None:
    assert not beat_now(before, after)
