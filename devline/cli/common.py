"""Shared CLI plumbing: global options → one Settings object, readable errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast

import typer
from rich.console import Console
from rich.markup import escape

from devline.envvars import env_name
from devline.errors import BrokerUnavailable, DevlineError

if TYPE_CHECKING:  # pydantic loads only for commands that build the settings
    from devline.settings import Settings

T = TypeVar("T")
err = Console(stderr=True, soft_wrap=True)  # errors stay greppable, one line each
out = Console()


def env_help(field: str, text: str) -> str:
    return f"{text} (env {env_name(field)})"


def settings_of(ctx: typer.Context) -> Settings:
    from devline.settings import Settings

    root = ctx.find_root()
    if callable(root.obj):  # built on first use (devline.cli.main.main_options)
        root.obj = root.obj()
    obj = root.obj
    if not isinstance(obj, Settings):
        raise typer.Exit(2)
    return obj


def _fail(text: str) -> typer.Exit:
    """Print one error line (secrets redacted) and return the exit to raise."""
    from devline.connectivity import redact

    settings = _current_settings()
    err.print(f"[red]error:[/red] {escape(redact(text, settings.secrets() if settings else ()))}")
    return typer.Exit(1)


def _current_settings() -> Settings | None:
    """The command's settings, for probing and redacting; None outside a command."""
    from typer._click.globals import get_current_context  # typer vendors click since 0.27

    ctx = get_current_context(silent=True)
    if ctx is None:
        return None
    try:
        return settings_of(cast(typer.Context, ctx))
    except (typer.Exit, DevlineError):
        return None


def use_event_loop(settings: Settings) -> None:
    """Install the event loop a long-running process runs on (`Settings.event_loop`):
    every loop it creates from now on (asyncio.run's, Faust's, its consumer thread's)."""
    if settings.event_loop != "uvloop":
        return
    try:
        import uvloop
    except ImportError:  # not on this platform: Python's own loop
        return
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; turn devline and Kafka errors into one readable line and exit 1."""
    try:
        import asyncio  # not at the top: `devline --help` and `analyze` never need it

        return asyncio.run(coro)
    except BrokerUnavailable as exc:
        # Raised from the client's error when no broker answered (else, e.g. a missing
        # topic, the broker is there and the message says what to do).
        if exc.__cause__ is None:
            raise _fail(str(exc)) from None
        from devline.connectivity import explain

        raise _fail(explain(exc, _current_settings())) from None
    except DevlineError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        from aiokafka.errors import KafkaError

        if isinstance(exc, KafkaError):
            # The client's message rarely says why (down, DNS, TLS, auth): a probe does.
            from devline.connectivity import explain

            raise _fail(explain(exc, _current_settings())) from None
        raise


THIRD_PARTY = {"aiokafka", "faust", "mode", "kafka", "asyncio"}


class Repeats(logging.Filter):
    """Lets one message of a kind through per `window` seconds and counts the rest: a
    broker outage makes the Kafka client log the same line every few milliseconds."""

    def __init__(self, window: float = 10.0) -> None:
        super().__init__()
        self.window = window
        self.seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] not in THIRD_PARTY:
            return True  # our own lines each say something
        key = (record.name, record.levelno, str(record.msg))
        last, hidden = self.seen.get(key, (-self.window, 0))
        if record.created - last < self.window:
            self.seen[key] = (last, hidden + 1)
            return False
        if hidden:
            record.msg = f"{record.msg} ({hidden} more like this in the last {self.window:g}s)"
        if len(self.seen) > 1000:
            self.seen.clear()
        self.seen[key] = (record.created, 0)
        return True


def setup_logging(level: str, quiet_kafka: bool = False) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    repeats = Repeats()
    for handler in logging.getLogger().handlers:
        handler.addFilter(repeats)
    # httpx2 (confluent-kafka's schema registry client; httpx in older releases) logs
    # every request at INFO: into a progress bar, and with the registry URL.
    for noisy in ("aiokafka", "faust", "mode", "kafka", "httpx", "httpcore", "httpx2",
                  "httpcore2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    if quiet_kafka:
        for name in ("aiokafka", "kafka", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
