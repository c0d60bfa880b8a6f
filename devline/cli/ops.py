"""`devline ops`: run the ops agent stage; `devline ops decisions`: list what it decided."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer
from rich.markup import escape

from devline.cli.common import out, run_async, settings_of

ops_app = typer.Typer(help="The ops agent: rules over metric windows and plan events that "
                      "re-prioritise, pause/resume executors, set the pool size and roll "
                      "back, each an OpsDecision on devline.ops.", rich_markup_mode=None)


@ops_app.callback(invoke_without_command=True)
def ops(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", envvar="DEVLINE_OPS_DRY_RUN",
        help="Record decisions with acted=false; nothing obeys them (env DEVLINE_OPS_DRY_RUN)"
    )] = False,
    interval: Annotated[float, typer.Option(
        min=0.1, envvar="DEVLINE_OPS_INTERVAL",
        help="Seconds between two runs of the rules (env DEVLINE_OPS_INTERVAL)")] = 10.0,
    stall_after: Annotated[float, typer.Option(
        min=0.0, envvar="DEVLINE_OPS_STALL_AFTER",
        help="Seconds a ready critical-path task may wait before it is raised "
             "(env DEVLINE_OPS_STALL_AFTER)")] = 120.0,
) -> None:
    """Run the ops stage until interrupted (Ctrl-C or SIGTERM). Several may run on one
    prefix: Kafka elects the one that acts, the others stand by to take over."""
    if ctx.invoked_subcommand is not None:
        return
    from agents.ops import RuleConfig
    from streams.ops import OpsConfig, run_ops

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = OpsConfig(interval_s=interval, dry_run=dry_run,
                       rules=RuleConfig(stall_after_s=stall_after))
    settings = settings_of(ctx)

    async def go() -> None:
        import asyncio
        import signal

        from streams.seat import run_seated

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_seated(settings, "ops", lambda halt: run_ops(settings, config, stop=halt),
                         stop)

    run_async(go())


@ops_app.command("decisions")
def decisions(
    ctx: typer.Context,
    plan: Annotated[str | None, typer.Option("--plan", help="Only this plan's decisions")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines")] = False,
) -> None:
    """List the decisions on devline.ops, oldest first."""
    from rich.table import Table

    from streams import topics as T
    from streams.ops.listing import load_decisions

    settings = settings_of(ctx)
    rows = run_async(load_decisions(settings, plan))
    if as_json:
        for row in rows:
            print(json.dumps(row), flush=True)
        return
    if not rows:
        out.print(f"no decisions in {settings.topic(T.OPS)}")
        return
    table = Table()
    for name in ("at", "action", "target", "acted", "rule", "reason", "evidence"):
        table.add_column(name, overflow="fold")
    for r in rows:
        p = r["params"]
        table.add_row(str(r["at"]), r["action"], escape(p.get("target", r.get("plan_id") or "")),
                      p.get("acted", ""), p.get("rule", "operator"), escape(r["reason"]),
                      escape(p.get("evidence", "")))
    out.print(table)
