"""Follow one plan through the event log with a progress bar, then print a summary."""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from devline.cli.common import err, out
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import records


async def follow_plan(settings: Settings, plan_id: str, start: dict[int, int],
                      timeout: float) -> int:  # noqa: ASYNC109 - a deadline over many reads
    """Exit code: 0 done, 1 rejected, 3 stalled (dead letters), 2 timed out."""
    codec = Codec.from_settings(settings)
    deadline = time.monotonic() + timeout
    key = plan_id.encode()
    summary: dict[str, Any] = {}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=err,
                  transient=False) as bar:
        task = bar.add_task(f"plan {plan_id}", total=None, note="waiting for the planner")
        async for record in records(settings, T.EVENTS, start=start, idle_timeout=None,
                                    follow=True):
            if time.monotonic() > deadline:
                err.print(f"[yellow]timed out after {timeout:.0f}s[/yellow]")
                return 2
            if record.key != key:
                continue
            try:
                event_type, ev = codec.decode(record.value or b"")
            except Exception:  # noqa: S112 - shown by `devline tail`, not fatal here
                continue
            if event_type == "PlanAccepted":
                bar.update(task, total=len(ev["tasks"]), note="running")
            elif event_type == "PlanRejected":
                bar.stop()
                err.print(f"[red]plan rejected:[/red] {escape(ev['reason'])}")
                return 1
            elif event_type == "TaskCompleted":
                summary["last"] = ev["path"]
                bar.update(task, advance=1, note=ev["path"] + (" (cached)" if ev["cached"] else ""))
            elif event_type == "TaskRetryScheduled":
                bar.update(task, note=f"retry {ev['path']} in {ev['delay_ms']}ms")
            elif event_type == "TaskDeadLettered":
                bar.stop()
                err.print(f"[red]dead letter:[/red] {ev['path']} after {ev['attempts']} "
                          f"attempts: {ev['reason']} (see `devline tail devline.escalations`)")
                return 3
            elif event_type == "PlanCompleted":
                bar.update(task, note="done")
                summary.update(ev)
                break
            if time.monotonic() > deadline:
                err.print(f"[yellow]timed out after {timeout:.0f}s[/yellow]")
                return 2
    out.print(f"plan {plan_id} done: {summary['files']} files, makespan "
              f"{summary['makespan_ms'] / 1000:.2f}s, executor runs {summary['executor_runs']}, "
              f"cache hits {summary['cache_hits']}")
    return 0
