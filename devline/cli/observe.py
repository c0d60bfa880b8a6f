"""`devline observe`: the read side (Prometheus, health, plan summaries, WebSocket)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from devline.cli.common import run_async, settings_of

log = logging.getLogger("devline.observe")


def observe(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(
        min=0, max=65535, envvar="DEVLINE_OBSERVE_PORT",
        help="Port to serve on")] = 8787,
    host: Annotated[str, typer.Option(
        envvar="DEVLINE_OBSERVE_HOST",
        help="Address to bind; 0.0.0.0 for every interface")
    ] = "127.0.0.1",
    token: Annotated[list[str] | None, typer.Option(
        envvar="DEVLINE_OBSERVE_TOKEN", show_default=False,
        help="Bearer token a WebSocket client must present (repeatable; none: open) "
             "(the env var takes several, space-separated)")] = None,
    origin: Annotated[list[str] | None, typer.Option(
        help="Browser origin allowed on /ws, e.g. https://dash.example (repeatable; "
             "none: no browser origin check)")] = None,
    tls_cert: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, envvar="DEVLINE_OBSERVE_TLS_CERT",
        help="TLS certificate chain (PEM); serves https/wss with --tls-key")] = None,
    tls_key: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, envvar="DEVLINE_OBSERVE_TLS_KEY",
        help="Private key of --tls-cert (PEM)")] = None,
    from_beginning: Annotated[bool, typer.Option(
        "--from-beginning",
        help="Rebuild metric windows from the start of devline.metrics instead of the "
             "last window + a few minutes")] = False,
) -> None:
    """Serve the read side: /metrics, /healthz, /api/plans/<id> and /ws, folded from the
    logs with a consumer group of its own (the pipeline never waits for it)."""
    from streams.observe.web import tls_context

    tls = tls_context(str(tls_cert) if tls_cert else None, str(tls_key) if tls_key else None)
    run_async(_observe(settings_of(ctx), host, port, tuple(token or ()),
                       tuple(origin or ()), tls, from_beginning))


async def _observe(settings: object, host: str, port: int, tokens: tuple[str, ...],
                   origins: tuple[str, ...], tls: object, from_beginning: bool) -> None:
    import ssl

    from devline.settings import Settings
    from streams.observe.service import ObserveService
    from streams.observe.web import make_app, make_hub, serve

    assert isinstance(settings, Settings)
    assert tls is None or isinstance(tls, ssl.SSLContext)
    service = ObserveService(settings, from_beginning=from_beginning)
    hub = make_hub(service, tokens, origins)
    from streams.observe.ui import add_ui_routes

    app = make_app(service, hub)
    add_ui_routes(app, tokens=tokens)  # the dashboard at /
    runner = await serve(app, host, port, tls)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, service.stop)
    reading = asyncio.create_task(service.run())
    scheme = "https" if tls else "http"
    try:
        waiter = asyncio.create_task(service.caught_up.wait())
        await asyncio.wait({reading, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if service.caught_up.is_set():
            log.info("observing on %s://%s:%d (caught up in %.1f s)", scheme, host, port,
                     service.caught_up_s or 0.0)
        await reading
    finally:
        await runner.cleanup()
