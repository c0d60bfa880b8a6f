"""Commands that run processes: run, processor, worker, demo."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from devline.cli.common import env_help, err, out, run_async, settings_of, use_event_loop

if TYPE_CHECKING:
    from devline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def run(
    ctx: typer.Context,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Fixed pool size: shortcut for --min-workers N --max-workers N")] = None,
    processors: Annotated[int | None, typer.Option(
        min=1, max=16, help=env_help("processors", "Stream processors sharing the plans "
                                     "(one of them, elected, dispatches)"))] = None,
    min_workers: Annotated[int | None, typer.Option(
        min=0, help=env_help("min_workers", "Fewest worker processes"))] = None,
    max_workers: Annotated[int | None, typer.Option(
        min=1, help=env_help("max_workers", "Most worker processes"))] = None,
    scale_target: Annotated[float | None, typer.Option(
        help=env_help("scale_target", "Tasks (queued + running) per worker to aim for"))] = None,
    scale_down_window: Annotated[float | None, typer.Option(
        help=env_help("scale_down_window",
                      "Seconds of lower load before the pool shrinks (cool-down)"))] = None,
    worker_grace: Annotated[float | None, typer.Option(
        help=env_help("worker_grace",
                      "Seconds a stopping worker may take to finish its task"))] = None,
    workspace: Annotated[Path | None, typer.Option(
        help=env_help("workspace", "Where finished files are written"))] = None,
    test_workers: Annotated[int | None, typer.Option(
        min=0, max=64, help=env_help("test_workers", "Test worker processes (integration "
                                     "test shards run on them in parallel)"))] = None,
    observe: Annotated[int, typer.Option(
        min=0, max=65535,
        help="Also serve the read side (/metrics, /healthz, /ws) on this port; 0: not",
        envvar="DEVLINE_OBSERVE_PORT")] = 0,
    rollouts: Annotated[bool, typer.Option(
        help="Also run the rollout stage (canary rollouts of completed plans)",
        envvar="DEVLINE_ROLLOUTS")] = False,
    ops: Annotated[bool, typer.Option(
        help="Also run the ops agent (decisions from metric windows)",
        envvar="DEVLINE_OPS")] = False,
    create_topics: Annotated[bool, typer.Option(help="Create missing topics first")] = True,
) -> None:
    """Start the stream processor, the test workers and an autoscaled pool of workers
    (and, when asked, the read side, the rollout stage and the ops agent); SIGTERM
    drains, exits 0."""
    from devline.supervisor import Supervisor
    from streams.topics import create_topics as create

    if workers is not None and (min_workers is not None or max_workers is not None):
        err.print("[red]error:[/red] use --workers alone, or --min-workers/--max-workers")
        raise typer.Exit(2)
    if workers is not None:
        min_workers = max_workers = workers
    settings = with_overrides(settings_of(ctx), processors=processors, min_workers=min_workers,
                              max_workers=max_workers, scale_target=scale_target,
                              scale_down_window=scale_down_window, worker_grace=worker_grace,
                              workspace=workspace, test_workers=test_workers)
    if create_topics:
        run_async(create(settings))
    stages: list[tuple[str, list[str]]] = []
    if observe:
        stages.append(("observe", ["observe", "--port", str(observe)]))
    if rollouts:
        stages.append(("rollouts", ["rollouts"]))
    if ops:
        stages.append(("ops", ["ops"]))
    code = run_async(Supervisor(settings, stages=stages).run())
    raise typer.Exit(code)


def with_overrides(settings: Settings, **flags: Any) -> Settings:
    """Settings with the given flags on top, validated like the environment is."""
    from devline.errors import ConfigError

    try:
        return settings.updated(**flags)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


def processor(
    ctx: typer.Context,
    standby: Annotated[bool, typer.Option(
        "--standby", help="Load and build everything, then wait for a line on stdin before "
        "connecting (a warm spare `devline run` promotes when the processor dies)")] = False,
) -> None:
    """Run only the stream processor (Faust worker: planner, scheduler, registry)."""
    import faust

    from streams.app import build
    from streams.topics import wait_for_topics

    settings = settings_of(ctx)
    use_event_loop(settings)
    pipeline = build(settings)
    # Topics are checked before standing by: once they exist they stay, and a promotion
    # should cost nothing but joining the group.
    run_async(wait_for_topics(settings))
    if settings.table_store == "rocksdb":  # stores from other changelogs: deleted, rebuilt
        from streams.stateguard import check

        run_async(check(settings))
    if standby and not sys.stdin.readline():
        raise typer.Exit(0)  # stdin closed: the supervisor is gone, nothing to stand in for
    worker = faust.Worker(pipeline.app, loglevel=settings.log_level.lower(), quiet=True,
                          override_logging=False)
    # No terminal spinner: its end writes a cursor escape (\x1b[?25h) to stdout even
    # when that is a pipe or a log file.
    worker.spinner = None
    worker.execute_from_commandline()


def sink(
    ctx: typer.Context,
    workspace: Annotated[Path | None, typer.Option(
        help=env_help("workspace", "Where finished files are written"))] = None,
) -> None:
    """Run the file sink: write every finished file into the workspace (own consumer group)."""
    from streams.sink import run_sink

    settings = with_overrides(settings_of(ctx), workspace=workspace)
    use_event_loop(settings)
    run_async(run_sink(settings))


def worker(
    ctx: typer.Context,
    worker_id: Annotated[str | None, typer.Option(help="Stable worker id")] = None,
    slots: Annotated[int | None, typer.Option(
        help=env_help("worker_slots", "Concurrent tasks"))] = None,
    grace: Annotated[float | None, typer.Option(
        help=env_help("worker_grace", "Seconds to finish tasks on SIGTERM"))] = None,
) -> None:
    """Run one worker process: consume dispatched work, run executors, report results."""
    from streams.worker import run_worker

    settings = settings_of(ctx)
    use_event_loop(settings)
    run_async(run_worker(settings, worker_id=worker_id, slots=slots,
                         grace_s=settings.worker_grace if grace is None else grace))


def tester(
    ctx: typer.Context,
    tester_id: Annotated[str | None, typer.Option(
        help="Stable test worker id (static group membership)")] = None,
) -> None:
    """Run one test worker: take integration test shards, run them, report the results."""
    from streams.tester import run_tester

    settings = settings_of(ctx)
    use_event_loop(settings)
    run_async(run_tester(settings, tester_id=tester_id))


async def _broker_answers(bootstrap: str) -> bool:
    import logging

    from aiokafka.admin import AIOKafkaAdminClient

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # "connection refused" is the expected answer here
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        return True
    except Exception:
        return False
    finally:
        # Closed either way: an admin client left open is an "Unclosed" warning on exit.
        with contextlib.suppress(Exception):
            await admin.close()
        quiet.setLevel(level)


def demo(
    ctx: typer.Context,
    plan: Annotated[Path, typer.Option(help="Plan to run")] = ROOT / "examples" / "calc-plan.yaml",
    workers: Annotated[int, typer.Option(help="Worker processes")] = 4,
    workspace: Annotated[Path, typer.Option(help="Where files are written")] = Path("devline-out"),
    observe_port: Annotated[int, typer.Option(
        min=0, max=65535,
        help="Port of the read side and dashboard during the run; 0: none")] = 8787,
    rollout: Annotated[bool, typer.Option(
        help="Roll the plan out as a canary afterwards (a healthy revision, then a bad one "
        "that is rolled back), on the simulated deploy target")] = True,
) -> None:
    """Start a local Kafka if none answers, run the pipeline, and run PLAN to completion
    (checks, fixes, integration tests), then roll it out as a canary."""
    settings = settings_of(ctx).model_copy(update={"workspace": workspace})
    if not asyncio.run(_broker_answers(settings.bootstrap)):
        script = ROOT / "scripts" / "kafka-local"
        err.print(f"no broker at {settings.bootstrap}; starting one with {script}")
        if subprocess.run([str(script), "start"]).returncode != 0:
            raise typer.Exit(1)
    from devline.supervisor import child_env
    from streams.topics import create_topics

    run_async(create_topics(settings))
    env = child_env(settings)
    env.setdefault("DEVLINE_ROLLOUT_CONFIG", str(ROOT / "examples" / "rollout.yaml"))
    args = ["--workers", str(workers), "--no-create-topics"]
    if observe_port:
        args += ["--observe", str(observe_port)]
    if rollout:
        args.append("--rollouts")
    runner = subprocess.Popen([sys.executable, "-m", "devline", "run", *args], env=env)
    started = time.monotonic()
    try:
        time.sleep(1.0)
        if observe_port:
            out.print(f"dashboard: http://127.0.0.1:{observe_port}/ (add ?plan=PLAN_ID)")
        revision = "v1" if rollout else None
        code, plan_id = _submit(plan, env, revision)
        if code == 0:
            project = _project_of(plan)
            files = sorted(p for p in (workspace / project).rglob("*") if p.is_file())
            out.print(f"\n{len(files)} files written under {workspace / project}:")
            for f in files:
                out.print(f"  {f.relative_to(workspace)}  ({f.stat().st_size} bytes)")
        if code == 0 and rollout and plan_id:
            code = _follow_rollout(settings, plan_id, "v1", expect="succeeded")
            if code == 0:
                out.print(f"\nrevision v2 changes {DEMO_CHANGED} and its canary fails 30% of "
                          "its requests:")
                code, bad = _submit(plan, env, "v2", {"rollout.stable_revision": "v1",
                                                      "rollout.sim.v2.error_rate": "0.3"},
                                    change=DEMO_CHANGED)
                if code == 0 and bad:
                    code = _follow_rollout(settings, bad, "v2", expect="rolled_back")
                if code == 0 and bad:
                    out.print(f"\n{DEMO_CHANGED}, the one file that differs from v1, gets a "
                              "fix task with the evidence; the fixed plan rolls out as v2-fix1")
                    code = _follow_rollout(settings, bad, "v2-fix1", expect="succeeded")
        if code == 0:
            out.print(f"demo finished in {time.monotonic() - started:.1f}s. Try: "
                      "devline tail devline.events --from-beginning --count 5")
    finally:
        runner.terminate()
        runner.wait(timeout=90)
    raise typer.Exit(code)


DEMO_CHANGED = "calc/evaluator.py"  # the file the demo's revision v2 changes


def _submit(plan: Path, env: dict[str, str], revision: str | None,
            options: dict[str, str] | None = None, change: str | None = None
            ) -> tuple[int, str | None]:
    """`devline submit PLAN --wait` (with the revision and extra options set, and a comment
    added to the content of file `change`); the exit code and the plan id it printed."""
    import tempfile

    import yaml

    path = plan
    if revision or options:
        doc = yaml.safe_load(plan.read_text(encoding="utf-8"))
        doc.setdefault("options", {}).update({"rollout.revision": revision or "",
                                              **(options or {})})
        for spec in doc["files"]:
            if spec["path"] == change and spec.get("content"):
                spec["content"] += f"\n# {revision}: a change the canary will judge\n"
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
            yaml.safe_dump(doc, tmp)
            path = Path(tmp.name)
    done = subprocess.run([sys.executable, "-m", "devline", "submit", str(path), "--wait"],
                          env=env, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(done.stdout)
    lines = done.stdout.split()
    return done.returncode, (lines[0] if lines else None)


def _follow_rollout(settings: Settings, plan_id: str, revision: str, expect: str,
                    within: float = 120.0) -> int:
    """Wait for the plan's rollout to end; print its timeline. 0 when it ended as expected."""
    from devline.cli.rollout import describe
    from streams.rollout.log import fold_plan

    out.print(f"\nrollout of {plan_id} (revision {revision}): following devline.rollouts")
    deadline = time.monotonic() + within
    state: dict[str, Any] = {}
    audit: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        state, audit, _ = run_async(fold_plan(settings, plan_id, idle_timeout=0.5))
        if state.get("revision") == revision and state.get("phase") in (
                "succeeded", "rolled_back", "aborted", "superseded"):
            break
        time.sleep(1.0)
    for line in describe(state, audit, int(time.time() * 1000)):
        out.print(f"  {escape(line)}")
    if state.get("phase") != expect:
        err.print(f"[red]rollout of {revision} ended {state.get('phase')!r}, expected "
                  f"{expect!r}[/red]")
        return 4
    return 0


def _project_of(plan: Path) -> str:
    from agents.planning import load_plan_file

    return str(load_plan_file(plan)["project"])
