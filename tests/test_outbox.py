"""A worker's result outbox survives the process: what was finished is reported, not rerun."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streams.outbox import Outbox


def test_a_result_written_before_a_crash_is_pending_for_the_next_worker(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "w1")
    record = {"dispatch_id": "d-1", "plan_id": "p", "task_id": "a.py", "event_id": "e"}
    asyncio.run(box.keep("TaskCompleted", record))
    again = Outbox(tmp_path / "w1")  # the restarted worker of the same slot
    assert again.pending() == [("TaskCompleted", record)]
    again.remove("d-1")
    assert again.pending() == [] and Outbox(tmp_path / "w2").pending() == []


def test_a_torn_entry_is_dropped_not_fatal(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    (tmp_path / "x.json").write_text('{"type": "TaskCompl')
    asyncio.run(box.keep("TaskFailed", {"dispatch_id": "../../etc", "plan_id": "p",
                                        "task_id": "t"}))
    assert [t for t, _ in box.pending()] == ["TaskFailed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etc.json"]  # no path escapes
