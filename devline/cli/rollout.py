"""`devline rollout <verb> PLAN` (control events, status) and `devline rollouts` (the stage).

Each verb writes one `RolloutControl` on `devline.rollouts`, keyed by the plan; the stage
folds it with the rollout's state like any other event, so a control survives restarts
and is in the history. `status` folds the plan's events from the log.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from devline.cli.common import out, run_async, settings_of

if TYPE_CHECKING:  # the rollout machine and the Kafka client load when a command runs
    from agents.rollout import Control
    from devline.settings import Settings

rollout_app = typer.Typer(help="Watch and steer canary rollouts (devline.rollouts).",
                          no_args_is_help=True, rich_markup_mode=None)
PlanArg = Annotated[str, typer.Argument(help="Plan id (the rollout's key)")]
ReasonOpt = Annotated[str | None, typer.Option(help="Why, kept in the rollout's history")]


def who() -> str:
    """user@host of whoever runs the CLI."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def send_control(settings: Settings, plan: str, action: Control, by: str | None = None,
                       reason: str | None = None) -> str:
    """Write one RolloutControl; return its event id."""
    from streams import topics as T
    from streams.client import produce
    from streams.emit import new_id, now_ms

    event_id = new_id()
    await produce(settings, T.ROLLOUTS, "RolloutControl", {
        "event_id": event_id, "plan_id": plan, "action": action.value, "by": by or who(),
        "reason": reason, "at": now_ms()}, key=plan)
    return event_id


def _control(ctx: typer.Context, plan: str, name: str, reason: str | None) -> None:
    from agents.rollout import Control

    action = Control[name]
    settings = settings_of(ctx)
    event_id = run_async(send_control(settings, plan, action, reason=reason))
    out.print(f"{action.value} sent for {escape(plan)} ({event_id}); "
              f"`devline rollout status {escape(plan)}` shows what it did")


@rollout_app.command()
def promote(ctx: typer.Context, plan: PlanArg, reason: ReasonOpt = None,
            full: Annotated[bool, typer.Option(
                "--full", help="Go straight to 100% and finish once it is live (no more "
                "bakes or analysis)")] = False) -> None:
    """Accept the current step (its weight must be live) and go on to the next."""
    _control(ctx, plan, "PROMOTE_FULL" if full else "PROMOTE", reason)


@rollout_app.command("skip-step")
def skip_step(ctx: typer.Context, plan: PlanArg, reason: ReasonOpt = None) -> None:
    """Leave the current step now, live or not (the last one only once it is live)."""
    _control(ctx, plan, "SKIP_STEP", reason)


@rollout_app.command()
def pause(ctx: typer.Context, plan: PlanArg, reason: ReasonOpt = None) -> None:
    """Stop the rollout's clocks (bake and deadline keep their remaining time)."""
    _control(ctx, plan, "PAUSE", reason)


@rollout_app.command()
def resume(ctx: typer.Context, plan: PlanArg, reason: ReasonOpt = None) -> None:
    """Restart the clocks of a paused rollout."""
    _control(ctx, plan, "RESUME", reason)


@rollout_app.command()
def abort(ctx: typer.Context, plan: PlanArg, reason: ReasonOpt = None) -> None:
    """Roll back to the stable revision now."""
    _control(ctx, plan, "ABORT", reason)


@rollout_app.command()
def retry(ctx: typer.Context, plan: PlanArg, reason: ReasonOpt = None) -> None:
    """After a rollback or an abort, start the same revision again at the first step."""
    _control(ctx, plan, "RETRY", reason)


def describe(state: dict[str, Any], audit: list[dict[str, Any]], now: int) -> list[str]:
    """Human lines for a folded rollout state."""
    if state["run"] is None:
        return [f"{state['plan']}: no rollout"]
    spec = state["spec"] or {}
    steps = spec.get("steps") or []
    weight = steps[state["step"]] if state["step"] < len(steps) else "?"
    lines = [f"plan {state['plan']}: {state['phase']}",
             f"revision {state['revision']} (stable {state['stable_revision'] or '-'}), "
             f"run {state['run']}",
             f"step {state['step'] + 1}/{len(steps)} at {weight}% "
             f"({'live' if state['deployed'] else 'not live yet'}), steps {steps}"]
    for kind, due in sorted(state["timers"].items(), key=lambda kv: kv[1]):
        lines.append(f"timer {kind}: due in {(int(due) - now) / 1000:.1f}s")
    if state.get("pause"):
        p = state["pause"]
        lines.append(f"paused ({p['kind']}): {p['reason']}; remaining "
                     + ", ".join(f"{k} {v / 1000:.1f}s" for k, v in p["remaining"].items()))
    analysis = state.get("analysis") or {}
    for metric, result in (analysis.get("metrics") or analysis).items():
        if isinstance(result, dict) and result.get("last"):
            last = result["last"][-1]
            lines.append(f"analysis {metric}: {json.dumps(last, default=str)}")
    if state.get("failure"):
        lines.append(f"failure: {state['failure']['reason']}")
    if state.get("last_control"):
        c = state["last_control"]
        lines.append(f"last control: {c['action']} by {c['by']} "
                     + ("accepted" if c["accepted"] else f"rejected: {c['reason']}"))
    lines.append("history:")
    start = state["history"][0]["at"] if state["history"] else now
    lines += [f"  +{(h['at'] - start) / 1000:7.1f}s {h['phase']:<12} {h['why']}"
              for h in state["history"]]
    if audit:
        lines.append(f"actions carried out: {len(audit)} (last: {audit[-1]['kind']}: "
                     f"{audit[-1].get('outcome') or ''})")
    return lines


@rollout_app.command()
def status(ctx: typer.Context, plan: PlanArg,
           as_json: Annotated[bool, typer.Option("--json", help="Print the folded state as "
                                                 "JSON")] = False) -> None:
    """Fold the plan's rollout from the log: phase, step, weight, timers, analysis, history."""
    from streams.rollout.log import fold_plan

    settings = settings_of(ctx)
    state, audit, _ = run_async(fold_plan(settings, plan))
    if as_json:
        print(json.dumps({"state": state, "actions": audit}, default=str))
        return
    for line in describe(state, audit, int(time.time() * 1000)):
        out.print(escape(line))


def rollouts(ctx: typer.Context, config: Annotated[Path | None, typer.Option(
        "--config", envvar="DEVLINE_ROLLOUT_CONFIG",
        help="Deploy targets, metric sources, rules and judge (YAML or JSON)")] = None) -> None:
    """Run the rollout stage: start rollouts of completed plans, fold and carry them out.
    Several may run on one prefix: Kafka elects the one that runs, the others stand by."""
    from streams.rollout.config import RolloutConfig
    from streams.rollout.stage import RolloutStage
    from streams.seat import run_seated
    from streams.topics import wait_for_topics

    settings = settings_of(ctx)
    cfg = RolloutConfig.load(config)

    async def go() -> None:
        await wait_for_topics(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:  # a stage per term in the seat; the config (and its services) for all of them
            await run_seated(settings, "rollouts",
                             lambda halt: RolloutStage(settings, cfg).run(halt), stop)
        finally:
            await cfg.close()

    run_async(go())


def register(app: typer.Typer) -> None:
    """Add `devline rollout ...` and `devline rollouts` to the main app."""
    app.add_typer(rollout_app, name="rollout")
    app.command("rollouts")(rollouts)


__all__ = ["register", "rollout_app", "send_control"]
