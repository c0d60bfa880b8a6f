"""Follow one submitted plan through the event log: the planner's verdict, a progress bar,
the summary, and the file sink catching up.

The plan's events are read from its own partition of devline.events, from the start, so a
plan submitted again (same content: nothing to do; other content: rejected) is answered
from what the log already holds. Acceptances and rejections carry the digest of the
submission they answer, so a submitter never mistakes another plan's verdict for its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from devline.cli.common import err, out
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import plan_partition, records, sink_position

DONE, REJECTED, TIMED_OUT, STALLED = 0, 1, 2, 3


@dataclass
class Following:
    """What the log has said so far about one submission."""

    plan_id: str
    digest: str
    accepted: bool = False
    total: int = 0
    other_content: bool = False
    done: set[str] = field(default_factory=set)
    summary: dict[str, Any] = field(default_factory=dict)
    completed_at: tuple[int, int] | None = None  # (partition, offset) of PlanCompleted
    qa: dict[str, int] = field(default_factory=lambda: {"checks": 0, "skipped": 0, "failed": 0,
                                                        "fixes": 0, "ms": 0})
    tests: dict[str, Any] = field(default_factory=lambda: {
        "rounds": 0, "tests": 0, "shards": 0, "failed": 0, "flaky": 0, "first_at": None,
        "last_at": None})

    def count_checks(self, report: dict[str, Any] | None) -> None:
        for check in (report or {}).get("checks") or []:
            self.qa["skipped" if check["status"] == "skipped" else "checks"] += 1
        self.qa["ms"] += int((report or {}).get("duration_ms") or 0)

    def ours(self, ev: dict[str, Any]) -> bool:
        return ev.get("digest") in (None, self.digest)


async def follow_plan(settings: Settings, plan_id: str, digest: str, within: float, *,
                      verdict_only: bool = False) -> int:
    """Exit code: 0 done (or accepted, with `verdict_only`), 1 rejected, 3 stalled (dead
    letters), 2 timed out."""
    codec = Codec.from_settings(settings)
    key = plan_id.encode()
    code: int | None = None
    state = Following(plan_id, digest)
    partition = await plan_partition(settings, plan_id)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=err,
                  transient=verdict_only, disable=verdict_only) as bar:
        task = bar.add_task(f"plan {plan_id}", total=None, note="waiting for the planner")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                async for record in records(settings, T.EVENTS, start={partition: 0},
                                            partitions=[partition], idle_timeout=None,
                                            follow=True):
                    if record.key != key:
                        continue
                    try:
                        event_type, ev = codec.decode(record.value or b"")
                    except Exception:  # noqa: S112 - shown by `devline tail`, not fatal
                        continue
                    code = _step(state, event_type, ev, bar, task)
                    if code == DONE and event_type == "PlanCompleted":
                        state.completed_at = (record.partition, record.offset)
                    if code is not None:
                        break
                    if verdict_only and state.accepted:
                        return DONE
        if code is not None:
            return await _finish(settings, state, code)
        err.print(f"[yellow]timed out after {within:.0f}s[/yellow]"
                  + ("" if state.accepted else ": no answer from the planner (is `devline "
                     "run` or `devline processor` running?)"))
        return TIMED_OUT


def _step(state: Following, event_type: str, ev: dict[str, Any], bar: Progress,
          task: Any) -> int | None:
    if event_type == "PlanAccepted":
        if state.ours(ev):
            state.accepted, state.total = True, len(ev["tasks"])
            state.done.clear()
            bar.update(task, total=state.total, completed=0, note="running")
        else:
            state.other_content = True
    elif event_type == "PlanRejected":
        if ev.get("digest") == state.digest or (ev.get("digest") is None
                                                and not state.accepted):
            bar.stop()
            err.print(f"[red]plan rejected:[/red] {escape(ev['reason'])}")
            return REJECTED
    elif not state.accepted:
        return None
    elif event_type == "TaskCompleted" and ev["task_id"] not in state.done:
        state.done.add(ev["task_id"])
        state.count_checks(ev.get("qa"))
        bar.update(task, completed=len(state.done),
                   note=ev["path"] + (" (cached)" if ev["cached"] else
                                      " verified" if ev.get("qa") else ""))
    elif event_type == "TaskFailed" and ev.get("error_type") == "qa":
        state.qa["failed"] += 1
        state.count_checks(ev.get("qa"))
        bar.update(task, note=f"{ev['path']} failed its checks: {escape(ev['error'][:60])}")
    elif event_type == "IntegrationStarted":
        t = state.tests
        t["rounds"] += 1
        t["tests"] += int(ev["tests_total"])
        t["shards"] = max(t["shards"], len(ev["shards"]))
        t["first_at"] = t["first_at"] or int(ev["at"])
        bar.update(task, note=f"integration round {ev['round']} ({ev['scope']}): "
                              f"{ev['tests_total']} tests on {len(ev['shards'])} shard(s)")
    elif event_type == "IntegrationResult":
        t = state.tests
        t["failed"] += len(ev.get("failures") or [])
        t["flaky"] += len(ev.get("flaky_tests") or [])
        t["last_at"] = int(ev["at"])
        bar.update(task, note=f"shard {ev['shard'] + 1}/{ev['shards']}: "
                              + ("passed" if ev["passed"] else "failed"))
    elif event_type == "TaskRetryScheduled" and ev.get("kind") == "fix":
        state.qa["fixes"] += 1
        bar.update(task, note=f"fixing {ev['path']} ({escape(ev['reason'][:60])})")
    elif event_type == "TaskRetryScheduled":
        bar.update(task, note=f"retry {ev['path']} in {ev['delay_ms']}ms")
    elif event_type == "TaskDeadLettered":
        bar.stop()
        err.print(f"[red]dead letter:[/red] {ev['path']} after {ev['attempts']} "
                  f"attempts: {ev['reason']} (see `devline dlq list`)")
        return STALLED
    elif event_type == "PlanCompleted":
        bar.update(task, note="done")
        state.summary.update(ev)
        return DONE
    return None


async def _finish(settings: Settings, state: Following, code: int) -> int:
    if code != DONE:
        return code
    s = state.summary
    out.print(f"plan {state.plan_id} done: {s['files']} files, makespan "
              f"{s['makespan_ms'] / 1000:.2f}s, executor runs {s['executor_runs']}, "
              f"cache hits {s['cache_hits']}")
    q = state.qa
    if q["checks"] or q["skipped"]:
        out.print(f"QA: {q['checks']} checks ({q['skipped']} skipped) in "
                  f"{q['ms'] / 1000:.2f}s, {q['failed']} failed, {q['fixes']} fixes")
    t = state.tests
    if t["rounds"]:
        wall = ((t["last_at"] or 0) - (t["first_at"] or 0)) / 1000
        out.print(f"tests: {t['tests']} in {t['rounds']} round(s) on {t['shards']} "
                  f"test workers in {wall:.2f}s, {t['failed']} failed, {t['flaky']} flaky")
    if state.completed_at is not None:
        await _wait_for_sink(settings, *state.completed_at)
    return DONE


async def _wait_for_sink(settings: Settings, partition: int, offset: int,
                         within: float = 30.0) -> None:
    """The file sink writes files as a stage of its own: wait until it is past the plan."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        position = await sink_position(settings, partition)
        if position is not None and position > offset:
            out.print(f"files written under {settings.workspace.resolve()}")
            return
        await asyncio.sleep(0.2)
    err.print(f"[yellow]the file sink has not written this plan's files within {within:.0f}s "
              "(is `devline run` or `devline sink` running?)[/yellow]")
