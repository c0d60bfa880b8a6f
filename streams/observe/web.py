"""HTTP faces of the read side: /metrics, /healthz, /api/plans/<id>, /ws (aiohttp)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.observe.service import ObserveService

log = logging.getLogger("devline.observe")

SERVICE: web.AppKey[ObserveService] = web.AppKey("service", ObserveService)
HUB: web.AppKey[Any] = web.AppKey("hub", object)


def make_hub(service: ObserveService, tokens: Sequence[str] = (),
             origins: Sequence[str] = ()) -> Any:
    """The WebSocket hub with the read side's channels; None when it is not installed."""
    try:
        from streams.observe.ws import Hub
    except ImportError:
        log.warning("observe: streams.observe.ws is missing; /ws answers 503")
        return None
    hub = Hub(tokens=tuple(tokens), origins=tuple(origins))
    hub.provide("plan:", service.plans.summary)
    hub.provide("metric:", lambda name: {"metric": name,
                                         "windows": service.windows.latest(name)})
    hub.provide("workers", lambda _rest: service.workers.snapshot())
    hub.provide("rollout:", lambda plan: service.rollouts.view(plan, service.now_ms()))
    service.publish = hub.publish
    return hub


def make_app(service: ObserveService, hub: Any = None) -> web.Application:
    app = web.Application()
    app[SERVICE] = service
    app[HUB] = hub
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/api/plans/{plan_id}", _plan)
    app.router.add_get("/api/workers", _workers)
    app.router.add_get("/ws", _ws)
    app.on_shutdown.append(_close_hub)
    return app


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[SERVICE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body: dict[str, Any] = {"caught_up": service.caught_up.is_set(),
                            "caught_up_s": service.caught_up_s, "lag": service.lag,
                            "plans": len(service.plans.plans),
                            "workers": service.workers.current(),
                            "windows": service.windows.aggregator.stats(),
                            "windows_written": service.windows.emitted}
    hub = request.app[HUB]
    if hub is not None:
        body["ws"] = hub.stats()
    return web.json_response(body, status=200 if service.caught_up.is_set() else 503)


async def _plan(request: web.Request) -> web.Response:
    summary = request.app[SERVICE].plans.summary(request.match_info["plan_id"])
    if summary is None:
        return web.json_response({"error": "no such live plan"}, status=404)
    return web.json_response(summary)


async def _workers(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].workers.snapshot())


async def _ws(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    if hub is None:
        return web.json_response({"error": "WebSocket hub not available"}, status=503)
    response: web.StreamResponse = await hub.handle(request)
    return response


async def _close_hub(app: web.Application) -> None:
    hub = app[HUB]
    if hub is not None:
        await hub.close()


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server TLS context from a certificate chain and its key, or None without them."""
    if not cert and not key:
        return None
    if not (cert and key):
        from devline.errors import ConfigError

        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


async def serve(app: web.Application, host: str, port: int,
                tls: ssl.SSLContext | None = None) -> web.AppRunner:
    """Start serving `app`; return the runner (`await runner.cleanup()` stops it)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    return runner
