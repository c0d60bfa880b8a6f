"""`devline ui`: the live dashboard's URL, served by a running read side or by this process.

When a service on `--host`/`--port` already serves the dashboard (`GET /` is the page),
print its URL (and open it with `--open`); when nothing answers there, run the read side
in this process with the dashboard (what `devline observe` serves, plus the page) until
Ctrl-C. A read side that answers without the dashboard is reported, not replaced.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import webbrowser
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlencode

import typer

from devline.cli.common import err, out, run_async, settings_of

if TYPE_CHECKING:
    from devline.settings import Settings
    from streams.observe.service import ObserveService

log = logging.getLogger("devline.observe")

PAGE_MARK = "<title>devline dashboard</title>"


def ui(
    ctx: typer.Context,
    plan: Annotated[str | None, typer.Option(
        help="Plan id to show (default: the page lists the live plans)")] = None,
    port: Annotated[int, typer.Option(
        min=1, max=65535, envvar="DEVLINE_OBSERVE_PORT",
        help="Port of the read side (used, or served here when free)")] = 8787,
    host: Annotated[str, typer.Option(
        envvar="DEVLINE_OBSERVE_HOST", help="Address of the read side")] = "127.0.0.1",
    token: Annotated[list[str] | None, typer.Option(
        envvar="DEVLINE_OBSERVE_TOKEN", show_default=False,
        help="Token for the page (put in its URL) and, when served here, required of "
             "clients (repeatable; the env var takes several, space-separated)")] = None,
    open_browser: Annotated[bool, typer.Option(
        "--open/--no-open", help="Open the page in the default browser")] = False,
    serve: Annotated[bool, typer.Option(
        "--serve/--no-serve",
        help="Serve the read side here when none answers (--no-serve: only look)")] = True,
) -> None:
    """Print (or --open) the live dashboard's URL; serve it here when no read side runs."""
    tokens = tuple(token or ())
    url = page_url(host, port, plan, tokens[0] if tokens else None)
    found = run_async(_probe(host, port))
    if found == "dashboard":
        out.print(url, soft_wrap=True)
        if open_browser:
            webbrowser.open(url)
        return
    if found == "other":
        err.print(f"[red]error:[/red] {host}:{port} answers without the dashboard (a read "
                  "side started without it?); run `devline ui --port <a free port>`")
        raise typer.Exit(1)
    if not serve:
        err.print(f"[red]error:[/red] nothing serves the dashboard on {host}:{port}")
        raise typer.Exit(1)
    run_async(serve_dashboard(settings_of(ctx), host, port, tokens,
                              on_ready=lambda: _ready(url, open_browser)))


def page_url(host: str, port: int, plan: str | None, token: str | None) -> str:
    """The dashboard's URL, with the plan and token in its query when given."""
    query = {k: v for k, v in (("plan", plan), ("token", token)) if v}
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - display only
    return f"http://{shown}:{port}/" + (f"?{urlencode(query)}" if query else "")


def _ready(url: str, open_browser: bool) -> None:
    out.print(f"dashboard: {url}", soft_wrap=True)
    if open_browser:
        webbrowser.open(url)


async def _probe(host: str, port: int) -> str:
    """'dashboard', 'other' (something answers HTTP without the page) or 'none'."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s, \
                s.get(f"http://{host}:{port}/") as r:
            body = await r.text(errors="replace")
    except (aiohttp.ClientError, TimeoutError, OSError):
        return "none"
    return "dashboard" if r.status == 200 and PAGE_MARK in body else "other"


async def serve_dashboard(settings: Settings, host: str, port: int,
                          tokens: tuple[str, ...] = (), *,
                          on_ready: Callable[[], None] | None = None,
                          stop: asyncio.Event | None = None) -> None:
    """Run the read side with the dashboard on host:port until SIGINT/SIGTERM or `stop`."""
    from streams.observe.service import ObserveService
    from streams.observe.ui import add_ui_routes
    from streams.observe.web import make_app, make_hub, serve

    service = ObserveService(settings)
    hub = make_hub(service, tokens)
    app = make_app(service, hub)
    add_ui_routes(app, tokens=tokens)
    runner = await serve(app, host, port)
    loop = asyncio.get_running_loop()
    stopper = None
    if stop is None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.stop)
    else:
        stopper = asyncio.create_task(_stop_on(stop, service))
    reading = asyncio.create_task(service.run())
    try:
        if on_ready is not None:
            on_ready()
        await reading
    finally:
        if stopper is not None:
            stopper.cancel()
        await runner.cleanup()


async def _stop_on(stop: asyncio.Event, service: ObserveService) -> None:
    await stop.wait()
    service.stop()
