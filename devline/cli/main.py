"""`devline`: submit plans, run the pipeline, inspect topics.

Start-up cost matters (`devline --help`, `devline analyze` run in a fraction of a second):
this module and every command module import only typer, rich and devline's light
modules at the top; the settings model (pydantic), the Kafka clients, Faust and the
analyzer load inside the commands that use them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from devline.cli.common import env_help, err, out, run_async, settings_of, setup_logging
from devline.cli.metavars import ConventionalGroup
from devline.envvars import env_name

if TYPE_CHECKING:
    from devline.settings import Settings


# Plain click help (rich_markup_mode=None): typer's rich help loads rich.markdown and
# rich.traceback, a third of `devline --help`'s start-up, to draw boxes around the text.
root = typer.Typer(help="devline: drive a development plan through parallel workers over Kafka.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  cls=ConventionalGroup)
PROCESSES = {"run", "processor", "worker", "sink", "demo"}
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
topics_app = typer.Typer(help="Create and describe devline's topics.", no_args_is_help=True,
                         rich_markup_mode=None)
root.add_typer(topics_app, name="topics")


def version_text() -> str:
    """`devline <version>`, from the installed package's metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"devline {version('devline')}"
    except PackageNotFoundError:  # running from a checkout that was never installed
        from devline import __version__

        return f"devline {__version__}"


def _print_version(value: bool) -> None:
    if value:
        print(version_text())
        raise typer.Exit(0)


@root.callback()
def main_options(
    ctx: typer.Context,
    bootstrap: Annotated[str | None, typer.Option(
        help=env_help("bootstrap", "Kafka bootstrap servers (host:port,...)"))] = None,
    registry_url: Annotated[str | None, typer.Option(
        help=env_help("registry_url", "Schema registry URL (Confluent wire format)"))] = None,
    topic_prefix: Annotated[str | None, typer.Option(
        help=env_help("topic_prefix", "Prefix for every topic and consumer group"))] = None,
    log_level: Annotated[str | None, typer.Option(
        help=env_help("log_level", "Log level: DEBUG, INFO, WARNING, ERROR"))] = None,
    version: Annotated[bool, typer.Option(
        "--version", "-V", is_eager=True, callback=_print_version,
        help="Print devline's version and exit")] = False,
) -> None:
    """Global options; every one can also come from a DEVLINE_* environment variable."""
    level = (log_level or os.environ.get(env_name("log_level")) or "INFO").upper()
    if level not in LEVELS:
        err.print(f"[red]error:[/red] log level {escape(level)!r}: use one of "
                  f"{', '.join(LEVELS)}")
        raise typer.Exit(2)

    def build() -> Settings:
        # Built when a command first asks (settings_of): `analyze` never pays for pydantic.
        from devline.errors import ConfigError
        from devline.settings import Settings

        try:
            return Settings.from_env(bootstrap=bootstrap, registry_url=registry_url,
                                     topic_prefix=topic_prefix, log_level=level)
        except ConfigError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None

    ctx.obj = build
    # Commands that start processes log what Kafka says; one-shot commands print one
    # readable error instead of the client library's reconnect chatter.
    setup_logging(level, quiet_kafka=ctx.invoked_subcommand not in PROCESSES)
    if ctx.invoked_subcommand in PROCESSES:
        from devline.cli import lognoise

        lognoise.install()


@topics_app.command("create")
def topics_create(ctx: typer.Context) -> None:
    """Create every catalogue topic that is missing (safe to run again)."""
    from streams.topics import create_topics

    settings = settings_of(ctx)
    # The table below is the report; the library's per-topic log line would repeat it.
    quiet = logging.getLogger("streams.topics")
    level = quiet.level
    quiet.setLevel(max(logging.WARNING, level))
    try:
        result = run_async(create_topics(settings))
    finally:
        quiet.setLevel(level)
    for name, status in sorted(result.items()):
        out.print(f"{status:8} {name}", soft_wrap=True)


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


@root.command()
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
    from devline.errors import ConfigError, PlanError
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


# Commands defined in their own modules, in `--help` order: name -> (module, attribute,
# kind). Only the command being run is imported and built (`main`); `--help` and the
# `app` attribute get them all. A "group" is a Typer app of subcommands.
LAZY: dict[str, tuple[str, str, str]] = {
    "tail": ("devline.cli.tail", "tail", "command"),
    "status": ("devline.cli.plans", "status", "command"),
    "events": ("devline.cli.plans", "events", "command"),
    "run": ("devline.cli.runner", "run", "command"),
    "worker": ("devline.cli.runner", "worker", "command"),
    "tester": ("devline.cli.runner", "tester", "command"),
    "processor": ("devline.cli.runner", "processor", "command"),
    "sink": ("devline.cli.runner", "sink", "command"),
    "demo": ("devline.cli.runner", "demo", "command"),
    "gc": ("devline.cli.gc", "gc", "command"),
    "replay": ("devline.cli.replay", "replay", "command"),
    "fork": ("devline.cli.replay", "fork", "command"),
    "reset": ("devline.cli.replay", "reset", "command"),
    "ops": ("devline.cli.ops", "ops_app", "group"),
    "observe": ("devline.cli.observe", "observe", "command"),
    "ui": ("devline.cli.ui", "ui", "command"),
    "dlq": ("devline.cli.dlq", "dlq_app", "group"),
    "rollout": ("devline.cli.rollout", "rollout_app", "group"),
    "rollouts": ("devline.cli.rollout", "rollouts", "command"),
    "analyze": ("devline.cli.analyze", "analyze", "command"),
}
# Global options that take a value: what `command_name` skips to find the command.
VALUE_OPTIONS = {"--bootstrap", "--registry-url", "--topic-prefix", "--log-level"}
_registered: set[str] = set()


def register(names: set[str] | None = None) -> typer.Typer:
    """Add the `LAZY` commands named (all when None) to the app; return the app."""
    from importlib import import_module

    for name, (module, attribute, kind) in LAZY.items():
        if name in _registered or (names is not None and name not in names):
            continue
        found = getattr(import_module(module), attribute)
        if kind == "group":
            root.add_typer(found, name=name)
        else:
            root.command(name)(found)
        _registered.add(name)
    return root


def command_name(args: list[str]) -> str | None:
    """The command `args` run (the first word after the global options), if any."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return args[i + 1] if i + 1 < len(args) else None
        if not arg.startswith("-"):
            return arg
        i += 2 if arg in VALUE_OPTIONS else 1
    return None


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the whole CLI, e.g. for typer's CliRunner
        return register()
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    name = command_name(args)
    register({name} if name in LAZY else None)
    root(args=args, prog_name="devline")  # also under `python -m devline`
