"""`devline`: submit plans, run the pipeline, inspect topics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from devline.cli.common import env_help, err, out, run_async, settings_of, setup_logging
from devline.errors import ConfigError, PlanError
from devline.settings import Settings

app = typer.Typer(help="devline: drive a development plan through parallel workers over Kafka.",
                  no_args_is_help=True, add_completion=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
PROCESSES = {"run", "processor", "worker", "sink", "demo"}
topics_app = typer.Typer(help="Create and describe devline's topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


@app.callback()
def main_options(
    ctx: typer.Context,
    bootstrap: Annotated[str | None, typer.Option(
        help=env_help("bootstrap", "Kafka bootstrap servers (host:port,...)"))] = None,
    registry_url: Annotated[str | None, typer.Option(
        help=env_help("registry_url", "Schema registry URL (Confluent wire format)"))] = None,
    topic_prefix: Annotated[str | None, typer.Option(
        help=env_help("topic_prefix", "Prefix for every topic and consumer group"))] = None,
    log_level: Annotated[str | None, typer.Option(
        help=env_help("log_level", "Log level: DEBUG, INFO, WARNING"))] = None,
) -> None:
    """Global options; every one can also come from a DEVLINE_* environment variable."""
    try:
        ctx.obj = Settings.from_env(bootstrap=bootstrap, registry_url=registry_url,
                                    topic_prefix=topic_prefix, log_level=log_level)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    # Commands that start processes log what Kafka says; one-shot commands print one
    # readable error instead of the client library's reconnect chatter.
    setup_logging(ctx.obj.log_level, quiet_kafka=ctx.invoked_subcommand not in PROCESSES)


@topics_app.command("create")
def topics_create(ctx: typer.Context) -> None:
    """Create every catalogue topic that is missing (safe to run again)."""
    from streams.topics import create_topics

    result = run_async(create_topics(settings_of(ctx)))
    for name, status in sorted(result.items()):
        out.print(f"{status:8} {name}")


@topics_app.command("describe")
def topics_describe(ctx: typer.Context) -> None:
    """Show the topic catalogue: partitions, cleanup policy, retention, purpose."""
    from rich.table import Table

    from streams.topics import describe_topics

    rows = run_async(describe_topics(settings_of(ctx)))
    table = Table("topic", "partitions", "cleanup", "retention", "what")
    for r in rows:
        ret = int(str(r["retention_ms"]))
        retention = "forever" if ret < 0 else f"{ret / 3_600_000:g}h"
        parts = str(r["partitions"]) if r["exists"] else "[red]missing[/red]"
        table.add_row(str(r["topic"]), parts, str(r["cleanup"]), retention, str(r["doc"]))
    out.print(table)


@app.command()
def submit(
    ctx: typer.Context,
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML or JSON)")],
    wait: Annotated[bool, typer.Option(
        "--wait", help="Follow the plan to completion with a progress bar")] = False,
    verdict: Annotated[bool, typer.Option(
        "--verdict/--no-verdict",
        help="Wait for the planner's answer (accepted, or rejected with the reason)")] = True,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait: for the verdict, or with --wait for the whole plan")] = 600.0,
    verdict_timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the planner's verdict")] = 30.0,
) -> None:
    """Validate PLAN, publish it to devline.plans and print its plan id.

    Exit codes: 0 accepted (or done, with --wait), 1 invalid or rejected, 2 timed out,
    3 stalled on a dead letter (with --wait).
    """
    from agents.executors.config import Executors
    from agents.planning import load_plan_file, submission_digest
    from devline.cli.progress import follow_plan
    from streams.client import publish_plan

    settings = settings_of(ctx)
    try:
        known = (Executors.from_file(settings.executor_config).available()
                 if settings.executor_config else None)
        record = load_plan_file(plan, known)
    except (PlanError, ConfigError) as exc:
        err.print(f"[red]invalid plan[/red] {escape(str(plan))}: {escape(str(exc))}")
        raise typer.Exit(1) from None

    run_async(publish_plan(settings, record))
    print(record["plan_id"], flush=True)
    if wait or verdict:
        code = run_async(follow_plan(settings, record["plan_id"], submission_digest(record),
                                     timeout if wait else verdict_timeout,
                                     verdict_only=not wait))
        if code == 2 and not wait:
            code = 0  # submitted; nobody answered yet (a warning says so)
        raise typer.Exit(code)


@app.command()
def tail(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic, e.g. devline.plans (prefix added)")],
    from_beginning: Annotated[bool, typer.Option("--from-beginning")] = False,
    count: Annotated[int | None, typer.Option(help="Stop after N records")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep waiting for more")] = False,
    idle: Annotated[float, typer.Option(help="Stop after this many idle seconds")] = 5.0,
) -> None:
    """Print decoded events of TOPIC as JSON lines (undecodable records are shown as such)."""
    from schemas.codec import Codec
    from streams.client import decode_for_display, records

    settings = settings_of(ctx)
    codec = Codec.from_settings(settings)

    async def go() -> None:
        n = 0
        async for record in records(settings, topic, from_beginning=from_beginning,
                                    idle_timeout=idle, follow=follow or count is not None):
            print(json.dumps(decode_for_display(codec, record), default=str), flush=True)
            n += 1
            if count is not None and n >= count:
                return

    run_async(go())


@app.command()
def status(
    ctx: typer.Context,
    plan_id: Annotated[str | None, typer.Argument(help="One plan (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show plan progress, folded from the event log (what a replay rebuilds)."""
    from agents.scheduling.fixes import state_name
    from streams.client import replay

    states = run_async(replay(settings_of(ctx), plan_id))
    if plan_id and plan_id not in states:
        err.print(f"[red]error:[/red] no plan {plan_id!r} in the event log")
        raise typer.Exit(1)
    summary: list[dict[str, Any]] = []
    for pid, st in sorted(states.items()):
        counts: dict[str, int] = {}
        for task in st.tasks.values():
            name = state_name(task)
            counts[name] = counts.get(name, 0) + 1
        h = st.header
        summary.append({"plan_id": pid, "name": h.get("name"), "status": h["status"],
                        "files": h.get("total", 0), "done": h.get("done", 0),
                        "cache_hits": h.get("cache_hits", 0), "tasks": counts,
                        "qa": {k: h.get(f"qa_{k}", 0) for k in ("checks", "skipped", "failed")}
                        | {"fixes": h.get("fixes", 0)},
                        "retired_at": h.get("retired_at")})
    if as_json:
        print(json.dumps(summary if not plan_id else summary[0], indent=2))
        return
    for s in summary:
        tasks = ", ".join(f"{k} {v}" for k, v in sorted(s["tasks"].items()))
        retired = "  (retired from the live tables)" if s["retired_at"] else ""
        q = s["qa"]
        qa = (f"  QA {q['checks']} checks, {q['skipped']} skipped, {q['failed']} failed, "
              f"{q['fixes']} fixes" if q["checks"] or q["skipped"] else "")
        out.print(f"{s['plan_id']}  {s['status']:8} {s['done']}/{s['files']} files  "
                  f"cache hits {s['cache_hits']}  ({tasks}){qa}  {s['name']}{retired}")
    if not summary:
        out.print("no plans in the event log")


@app.command()
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


def _register_optional() -> None:
    from devline.cli import runner

    app.command("run")(runner.run)
    app.command("worker")(runner.worker)
    app.command("tester")(runner.tester)
    app.command("processor")(runner.processor)
    app.command("sink")(runner.sink)
    app.command("demo")(runner.demo)
    app.command("gc")(__import__("devline.cli.gc", fromlist=["gc"]).gc)
    app.command("replay")(__import__("devline.cli.replay", fromlist=["replay"]).replay)
    app.command("fork")(__import__("devline.cli.replay", fromlist=["fork"]).fork)
    app.command("reset")(__import__("devline.cli.replay", fromlist=["reset"]).reset)
    app.add_typer(__import__("devline.cli.ops", fromlist=["ops_app"]).ops_app, name="ops")
    app.command("observe")(__import__("devline.cli.observe", fromlist=["observe"]).observe)
    app.command("ui")(__import__("devline.cli.ui", fromlist=["ui"]).ui)
    from devline.cli.dlq import dlq_app

    app.add_typer(dlq_app, name="dlq")
    __import__("devline.cli.rollout", fromlist=["register"]).register(app)
    try:
        from devline.cli.analyze import analyze
    except ImportError:  # the analyzer ships in its own module
        return
    app.command("analyze")(analyze)


_register_optional()


def main() -> None:
    app()
