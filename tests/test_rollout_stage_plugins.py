"""Deploy targets and metric sources against real local sockets and processes (no broker)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from agents.rollout import outstanding
from agents.rollout.sources import (
    CommandSource,
    MeasureContext,
    PrometheusSource,
    SimulatedSource,
    p95,
)
from agents.rollout.targets import (
    CommandTarget,
    DeployError,
    Deployment,
    SimulatedTarget,
    WebhookTarget,
    behaviours,
)
from devline.errors import ConfigError
from streams.rollout.config import RolloutConfig
from streams.rollout.records import spec_options, wants_rollout

CTX = MeasureContext("p1", "r2", "r1", 50)


@asynccontextmanager
async def http(routes: list[web.RouteDef]) -> AsyncIterator[str]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_command_target_gets_the_weight_in_its_environment(tmp_path: Any) -> None:
    seen = tmp_path / "seen.json"
    script = ("import json, os, sys; json.dump({k: os.environ[k] for k in "
              "('REVISION', 'WEIGHT', 'STABLE_REVISION')}, open(sys.argv[1], 'w'))")
    target = CommandTarget("deploy", [sys.executable, "-c", script, str(seen)])
    asyncio.run(target.set_weight(Deployment("p1", "r2", 25, "r1")))
    assert json.loads(seen.read_text()) == {"REVISION": "r2", "WEIGHT": "25",
                                            "STABLE_REVISION": "r1"}
    failing = CommandTarget("deploy", [sys.executable, "-c", "import sys; sys.exit('no')"])
    with pytest.raises(DeployError, match="exited 1: no"):
        asyncio.run(failing.set_weight(Deployment("p1", "r2", 25)))
    slow = CommandTarget("deploy", [sys.executable, "-c", "import time; time.sleep(5)"], 0.3)
    with pytest.raises(DeployError, match="timed out"):
        asyncio.run(slow.set_weight(Deployment("p1", "r2", 25)))


def test_webhook_target_posts_json_and_needs_a_2xx() -> None:
    got: list[dict[str, Any]] = []

    async def ok(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(status=204)

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response()

    async def go() -> None:
        async with http([web.post("/ok", ok), web.post("/down", down),
                         web.post("/slow", slow)]) as base:
            await WebhookTarget("hook", f"{base}/ok").set_weight(
                Deployment("p1", "r2", 50, "r1"))
            with pytest.raises(DeployError, match="503: maintenance"):
                await WebhookTarget("hook", f"{base}/down").set_weight(Deployment("p1", "r2", 5))
            with pytest.raises(DeployError, match="timed out"):
                await WebhookTarget("hook", f"{base}/slow", 0.2).set_weight(
                    Deployment("p1", "r2", 5))

    asyncio.run(go())
    assert got == [{"plan": "p1", "revision": "r2", "weight": 50, "stable_revision": "r1"}]


def test_simulated_target_serves_weights_and_the_source_reads_them() -> None:
    async def go() -> None:
        target = SimulatedTarget("sim", seed=7)
        source = SimulatedSource("sim", target)
        try:
            assert (await source.measure("error_rate", CTX)).value is None  # no service yet
            opts = {"rollout.sim.r2.error_rate": "0.5", "rollout.sim.rps": "0"}
            await target.set_weight(Deployment("p1", "r2", 50, "r1", opts))
            svc = target.services["p1"]
            import aiohttp

            async with aiohttp.ClientSession() as session:
                for _ in range(200):
                    async with session.get(svc.url) as resp:
                        await resp.read()
            counts = svc.window()
            assert 60 < counts["r2"].requests < 140 and counts["r1"].errors == 0
            m = await source.measure("error_rate", CTX)
            assert m.samples == counts["r2"].requests and 0.3 < (m.value or 0) < 0.7
            assert (await source.measure("latency_p95", CTX)).value is not None
            samples = await source.samples("error_rate", CTX)
            assert len(samples["canary"]) == m.samples and set(samples["stable"]) == {0.0}
            # Rollback: weight 0 starts a new window with all traffic on stable.
            await target.set_weight(Deployment("p1", "r2", 0, "r1", opts))
            assert (await source.measure("error_rate", CTX)).value is None
        finally:
            await target.close()

    asyncio.run(go())


def test_prometheus_source_speaks_the_query_api() -> None:
    queries: list[str] = []

    async def query(request: web.Request) -> web.Response:
        q = request.query["query"]
        queries.append(q)
        if "empty" in q:
            result: list[Any] = []
        elif "broken" in q:
            return web.json_response({"status": "error", "errorType": "bad_data",
                                      "error": "parse error"}, status=400)
        elif "count" in q:
            result = [{"metric": {}, "value": [1.7e9, "240"]}]
        else:
            result = [{"metric": {"rev": "r2"}, "value": [1.7e9, "0.013"]}]
        return web.json_response({"status": "success",
                                  "data": {"resultType": "vector", "result": result}})

    async def go() -> None:
        async with http([web.get("/api/v1/query", query)]) as base:
            source = PrometheusSource("prom", base, {
                "error_rate": {"query": 'sum(rate(err{rev="$revision"}[1m]))',
                               "samples": 'count(req{rev="$revision"})'},
                "nodata": "empty", "bad": "broken"})
            m = await source.measure("error_rate", CTX)
            assert (m.value, m.samples, m.error) == (0.013, 240, None)
            assert queries[0] == 'sum(rate(err{rev="r2"}[1m]))'
            assert (await source.measure("nodata", CTX)).value is None
            bad = await source.measure("bad", CTX)
            assert bad.value is None and "parse error" in (bad.error or "")
            both = await source.samples("error_rate", CTX)
            assert both == {"canary": [0.013], "stable": [0.013]}
            assert queries[-1] == 'sum(rate(err{rev="r1"}[1m]))'

    asyncio.run(go())


def test_command_source_reads_json() -> None:
    ok = CommandSource("cmd", [sys.executable, "-c",
                               "import json, os; print(json.dumps({'value': 0.5, 'samples': 9, "
                               "'m': os.environ['METRIC']}))"])
    m = asyncio.run(ok.measure("error_rate", CTX))
    assert (m.value, m.samples, m.error) == (0.5, 9, None)
    none = CommandSource("cmd", [sys.executable, "-c", "print('{\"value\": null}')"])
    assert asyncio.run(none.measure("x", CTX)).value is None
    junk = CommandSource("cmd", [sys.executable, "-c", "print('hello')"])
    assert "did not print JSON" in (asyncio.run(junk.measure("x", CTX)).error or "")


def test_config_and_options() -> None:
    cfg = RolloutConfig.from_mapping({})
    assert cfg.target(None).name == "sim" and cfg.source(None).name == "sim"
    with pytest.raises(ConfigError, match="unknown type"):
        RolloutConfig.from_mapping({"targets": {"x": {"type": "ftp"}}})
    with pytest.raises(ConfigError, match="no rollout target"):
        cfg.target("nope")
    assert behaviours({"rollout.sim.v1.2.error_rate": "0.1", "rollout.sim.rps": "5"})[0][
        "v1.2"].error_rate == 0.1
    with pytest.raises(ConfigError):
        behaviours({"rollout.sim.r2.error_rate": "2"})
    assert wants_rollout({"rollout": "on"}) and wants_rollout({"rollout.steps": "50,100"})
    assert not wants_rollout({"rollout": "off", "rollout.steps": "100"})
    assert not wants_rollout({"executor": "demo"})
    assert spec_options({"rollout.steps": "100", "rollout.sim.r2.error_rate": "1",
                         "rollout.target": "sim", "rollout.stpes": "1"}) == {
        "rollout.steps": "100", "rollout.stpes": "1"}  # a typo still reaches parse_spec
    assert p95([]) is None and p95([float(i) for i in range(1, 101)]) == 95.0


def test_outstanding_effects_come_from_the_state() -> None:
    from agents.rollout import apply, initial_state, parse_spec

    spec = parse_spec({"rollout.steps": "50,100", "rollout.bake_s": "2",
                       "rollout.interval_s": "1"}).to_dict()
    s = initial_state("p1")
    apply(s, "RolloutStarted", {"id": "a", "plan": "p1", "revision": "r2", "spec": spec}, 0)
    [redo] = outstanding(s)
    assert redo.kind.value == "set_weight" and redo.data["percent"] == 50
    apply(s, "DeployDone", {"id": "b", "run": s["run"], "step": 0, "weight": 50}, 10)
    assert outstanding(s) == []  # baking, nothing asked and unanswered
    apply(s, "RolloutControl", {"id": "c", "action": "abort", "by": "me"}, 20)
    [redo] = outstanding(s)
    assert redo.kind.value == "rollback" and redo.data["rollback"] == 1
    apply(s, "DeployDone", {"id": "d", "run": s["run"], "step": 0, "weight": 0,
                            "rollback": 1}, 30)
    assert outstanding(s) == []
