"""The live dashboard: a static page on the read side's web app, and the JSON it loads once.

`add_ui_routes(app)` adds to the app `web.make_app` built:

- `GET /` the page (`ui_static/index.html`), `GET /ui/<file>` its scripts and styles. No
  build step, no CDN: everything is in `ui_static/`.
- `GET /api/ui/plans`: the live plans (the page's picker when it has no `?plan=`).
- `GET /api/ui/plans/<id>`: one plan's structure: tasks with their dependencies, level,
  priority, state, attempt and fix counters, and the critical path. The page loads it once,
  then follows `plan:<id>` on `/ws` (see `streams.observe.ws`).
- `GET /api/rollouts/<plan>`: the plan's rollout folded from `devline.rollouts` (phase,
  step, weight, analysis); `{"rollout": false}` when it has none.
- `POST /api/rollouts/<plan>/<promote|abort>`: one `RolloutControl`, as
  `devline rollout promote|abort PLAN` writes it.

With `tokens`, every `/api/ui/...` and `/api/rollouts/...` request needs one
(`Authorization: Bearer <t>`, or `?token=` on GETs); the page takes it from its own URL.
A control POST must also carry `X-Devline-UI: 1`: a page of another origin cannot add that
header without a CORS preflight, which is never answered, so it cannot forge a click.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from agents.scheduling import fold as F
from agents.scheduling.fixes import state_name

log = logging.getLogger("devline.observe.ui")

STATIC = Path(__file__).with_name("ui_static")
CONTROLS = ("promote", "abort")
TOKENS: web.AppKey[tuple[bytes, ...]] = web.AppKey("ui_tokens", tuple)
NO_CACHE = {"Cache-Control": "no-cache"}


def add_ui_routes(app: web.Application, *, tokens: Collection[str] = ()) -> None:
    """Serve the dashboard at `/` and its assets at `/ui/` on the read side's app."""
    app[TOKENS] = tuple(t.encode() for t in tokens)
    app.router.add_get("/", _index)
    app.router.add_static("/ui/", STATIC, show_index=False, follow_symlinks=False)
    app.router.add_get("/api/ui/plans", _plans)
    app.router.add_get("/api/ui/plans/{plan_id}", _plan)
    app.router.add_get("/api/rollouts/{plan_id}", _rollout)
    app.router.add_post("/api/rollouts/{plan_id}/{action}", _control)


# -- pure: the plan's structure ---------------------------------------------------------------

def plan_view(plan_id: str, state: F.PlanState) -> dict[str, Any]:
    """The structure the page draws: tasks, their dependencies and counters, critical path."""
    h = state.header
    tasks = []
    for tid, task in sorted(state.tasks.items()):
        spec = task["spec"]
        tasks.append({
            "id": tid, "path": spec.get("path", tid), "depends_on": list(spec["depends_on"]),
            "level": int(spec.get("level") or 0), "priority": float(spec.get("priority") or 0),
            "cost": float(spec.get("cost") or 0), "state": state_name(dict(task)),
            "kind": task.get("kind"), "attempt": int(task.get("attempt") or 1),
            "fixes": int(task.get("fix_count") or 0), "worker": task.get("worker_id"),
            "cached": bool(task.get("cached"))})
    return {"plan_id": plan_id, "name": h.get("name"), "status": h.get("status"),
            "files": h.get("total", 0), "done": h.get("done", 0), "fixes": h.get("fixes", 0),
            "seq": h.get("seq"), "tasks": tasks, "critical_path": critical_path(tasks)}


def critical_path(tasks: list[dict[str, Any]]) -> list[str]:
    """The chain the planner's `critical_path` names, from the tasks' bottom levels.

    A task's priority is its bottom level (its cost plus the longest chain of dependents),
    so the path starts at the task with no dependencies and the highest priority and goes
    on to the dependent with the highest priority, ties broken by id as the planner does.
    """
    by_id = {t["id"]: t for t in tasks}
    dependents: dict[str, list[str]] = {tid: [] for tid in by_id}
    for t in tasks:
        for dep in t["depends_on"]:
            if dep in dependents:
                dependents[dep].append(t["id"])
    starts = [t for t in tasks if not t["depends_on"]]
    if not starts:
        return []
    node = max(starts, key=lambda t: (t["priority"], t["id"]))["id"]
    path = [node]
    while dependents[node] and len(path) <= len(tasks):
        node = max(dependents[node], key=lambda d: (by_id[d]["priority"], d))
        path.append(node)
    return path


def rollout_view(state: Mapping[str, Any], lines: list[str]) -> dict[str, Any]:
    """The rollout panel's data from a folded rollout state."""
    if state.get("run") is None:
        return {"rollout": False, "plan": state.get("plan")}
    steps = list((state.get("spec") or {}).get("steps") or [])
    step = int(state.get("step") or 0)
    analysis = state.get("analysis") or {}
    verdicts = []
    for metric, result in (analysis.get("metrics") or analysis).items():
        if isinstance(result, dict) and result.get("last"):
            verdicts.append({"metric": metric, "last": result["last"][-1]})
    return {"rollout": True, "plan": state.get("plan"), "phase": state.get("phase"),
            "revision": state.get("revision"), "step": step, "steps": steps,
            "weight": steps[step] if step < len(steps) else None,
            "deployed": bool(state.get("deployed")), "verdicts": verdicts,
            "judgement": state.get("judgement"), "failure": state.get("failure"),
            "last_control": state.get("last_control"), "lines": lines}


# -- handlers ---------------------------------------------------------------------------------

async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=NO_CACHE)


def _authorized(request: web.Request, query: bool = True) -> bool:
    tokens = request.app[TOKENS]
    if not tokens:
        return True
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else ""
    if not given and query:
        given = request.query.get("token", "")
    if not given:
        return False
    return any([hmac.compare_digest(given.encode(), t) for t in tokens])


def _refuse(request: web.Request, query: bool = True) -> web.Response | None:
    if _authorized(request, query):
        return None
    return web.json_response({"error": "token required"}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="devline"'})


def _service(request: web.Request) -> Any:
    from streams.observe.web import SERVICE

    return request.app[SERVICE]


async def _plans(request: web.Request) -> web.Response:
    if (refused := _refuse(request)) is not None:
        return refused
    plans = _service(request).plans.plans
    rows = [{"plan_id": pid, "name": st.header.get("name"), "status": st.header.get("status"),
             "files": st.header.get("total", 0), "done": st.header.get("done", 0)}
            for pid, st in sorted(plans.items()) if st.header]
    return web.json_response({"plans": rows}, headers=NO_CACHE)


async def _plan(request: web.Request) -> web.Response:
    if (refused := _refuse(request)) is not None:
        return refused
    pid = request.match_info["plan_id"]
    state = _service(request).plans.plans.get(pid)
    if state is None or not state.header:
        return web.json_response({"error": "no such live plan"}, status=404)
    return web.json_response(plan_view(pid, state), headers=NO_CACHE)


async def _rollout(request: web.Request) -> web.Response:
    if (refused := _refuse(request)) is not None:
        return refused
    from devline.cli.rollout import describe
    from streams.rollout.log import fold_plan

    pid = request.match_info["plan_id"]
    try:
        state, audit, _ = await fold_plan(_service(request).settings, pid, idle_timeout=0.5)
    except Exception as exc:  # the panel says so; the rest of the page goes on
        log.warning("ui: rollout of %s not read: %s", pid, exc)
        return web.json_response({"rollout": False, "plan": pid,
                                  "error": f"rollouts not readable: {exc}"}, status=503)
    lines = describe(state, audit, _now_ms()) if state.get("run") is not None else []
    return web.json_response(rollout_view(state, lines), headers=NO_CACHE)


async def _control(request: web.Request) -> web.Response:
    if (refused := _refuse(request, query=False)) is not None:
        return refused
    if request.headers.get("X-Devline-UI") != "1":
        return web.json_response({"error": "X-Devline-UI: 1 header required"}, status=403)
    action = request.match_info["action"]
    if action not in CONTROLS:
        return web.json_response({"error": f"action must be one of {', '.join(CONTROLS)}"},
                                 status=400)
    from agents.rollout import Control
    from devline.cli.rollout import send_control

    pid = request.match_info["plan_id"]
    by = f"ui@{request.remote or '?'}"
    try:
        event_id = await send_control(_service(request).settings, pid, Control(action),
                                      by=by, reason="from the dashboard")
    except Exception as exc:
        log.warning("ui: %s of %s not sent: %s", action, pid, exc)
        return web.json_response({"error": f"not sent: {exc}"}, status=503)
    log.info("ui: %s sent for %s by %s (%s)", action, pid, by, event_id)
    return web.json_response({"sent": action, "plan": pid, "event_id": event_id})


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
