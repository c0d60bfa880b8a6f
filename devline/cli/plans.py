"""`devline status` and `devline events`: plans as the event log tells them."""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from devline.cli.common import err, out, run_async, settings_of

if TYPE_CHECKING:
    from agents.scheduling.fold import PlanState


def summarize(plan_id: str, st: PlanState) -> dict[str, Any]:
    """The JSON summary of one folded plan (what `status --json` prints)."""
    from agents.scheduling.summary import summarize as summary

    return summary(plan_id, st)


def status_lines(summary: list[dict[str, Any]], width: int = 80) -> list[str]:
    """A header, then per plan one line of columns and one indented detail line (the
    name and task states, or a rejected plan's reason). Ids are never broken (they are
    copied into other commands); only the detail line wraps to `width`."""
    idw = max([4, *(len(s["plan_id"]) for s in summary)])
    lines = [f"{'PLAN':<{idw}}  {'STATUS':<8}  {'FILES':>7}  QA (checks/failed/fixes)"]
    for s in summary:
        q = s["qa"]
        qa = f"{q['checks']}/{q['failed']}/{q['fixes']}" if q["checks"] or q["skipped"] else "-"
        if q["skipped"]:
            qa += f" ({q['skipped']} skipped)"
        lines.append(f"{s['plan_id']:<{idw}}  {s['status']:<8}  "
                     f"{s['done']:>3}/{s['files']:<3}  {qa}")
        if s["status"] == "rejected":
            detail = f"rejected: {s.get('reason') or 'no reason given'}"
        else:
            tasks = ", ".join(f"{k} {v}" for k, v in sorted(s["tasks"].items()))
            detail = "; ".join(x for x in (
                str(s["name"] or ""), tasks,
                f"cache hits {s['cache_hits']}" if s["cache_hits"] else "") if x)
        if s["retired_at"]:
            detail += " (retired from the live tables)"
        lines += textwrap.wrap(detail, width=max(width, 20), initial_indent="  ",
                               subsequent_indent="    ", break_on_hyphens=False) or ["  -"]
    return lines


def status(
    ctx: typer.Context,
    plan_id: Annotated[str | None, typer.Argument(help="One plan (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show plan progress, folded from the event log (what a replay rebuilds)."""
    from streams.client import replay

    states = run_async(replay(settings_of(ctx), plan_id))
    if plan_id and plan_id not in states:
        err.print(f"[red]error:[/red] no plan {plan_id!r} in the event log")
        raise typer.Exit(1)
    summary = [summarize(pid, st) for pid, st in sorted(states.items())]
    if as_json:
        print(json.dumps(summary if not plan_id else summary[0], indent=2))
        return
    if not summary:
        out.print("no plans in the event log")
        return
    for n, line in enumerate(status_lines(summary, out.width)):
        out.print(escape(line), style="bold" if n == 0 else None, soft_wrap=True,
                  highlight=False)


def events(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(help="The plan whose timeline to show")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """Show a plan's timeline from the event log: what happened, to which file, where, when."""
    from rich.table import Table

    from streams.client import plan_timeline

    rows = run_async(plan_timeline(settings_of(ctx), plan_id))
    if not rows:
        err.print(f"[red]error:[/red] no events for plan {escape(plan_id)!r}")
        raise typer.Exit(1)
    if as_json:
        for row in rows:
            print(json.dumps(row), flush=True)
        return
    table = Table()
    for name in ("+s", "event", "file", "attempt"):
        table.add_column(name, no_wrap=True)
    table.add_column("worker", overflow="fold")
    table.add_column("detail", overflow="fold")
    for r in rows:
        table.add_row(f"{r['t'] / 1000:.3f}", r["type"], escape(r["task"] or ""),
                      str(r["attempt"] or ""), escape(r["worker"] or ""), escape(r["detail"]))
    out.print(table)
