"""Commands that run processes: run, processor, worker, demo."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from devline.cli.common import err, out, run_async, settings_of

ROOT = Path(__file__).resolve().parents[2]


def run(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option(help="Worker processes to start")] = 2,
    workspace: Annotated[Path | None, typer.Option(
        help="Where finished files are written (env DEVLINE_WORKSPACE)")] = None,
    create_topics: Annotated[bool, typer.Option(help="Create missing topics first")] = True,
) -> None:
    """Start the stream processor and a pool of workers; SIGTERM drains and exits 0."""
    from devline.supervisor import Supervisor
    from streams.topics import create_topics as create

    settings = settings_of(ctx)
    if workspace is not None:
        settings = settings.model_copy(update={"workspace": workspace})
    if create_topics:
        run_async(create(settings))
    code = run_async(Supervisor(settings, workers).run())
    raise typer.Exit(code)


def processor(ctx: typer.Context) -> None:
    """Run only the stream processor (Faust worker: planner, scheduler, registry)."""
    import faust

    from streams.app import build

    settings = settings_of(ctx)
    pipeline = build(settings)
    worker = faust.Worker(pipeline.app, loglevel=settings.log_level.lower(), quiet=True,
                          override_logging=False)
    worker.execute_from_commandline()


def worker(
    ctx: typer.Context,
    worker_id: Annotated[str | None, typer.Option(help="Stable worker id")] = None,
    slots: Annotated[int | None, typer.Option(
        help="Concurrent tasks (env DEVLINE_WORKER_SLOTS)")] = None,
    grace: Annotated[float, typer.Option(help="Seconds to finish tasks on SIGTERM")] = 30.0,
) -> None:
    """Run one worker process: consume dispatched work, run executors, report results."""
    from streams.worker import run_worker

    run_async(run_worker(settings_of(ctx), worker_id=worker_id, slots=slots, grace_s=grace))


async def _broker_answers(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        await admin.close()
        return True
    except Exception:
        return False


def demo(
    ctx: typer.Context,
    plan: Annotated[Path, typer.Option(help="Plan to run")] = ROOT / "examples" / "calc-plan.yaml",
    workers: Annotated[int, typer.Option(help="Worker processes")] = 4,
    workspace: Annotated[Path, typer.Option(help="Where files are written")] = Path("devline-out"),
) -> None:
    """Start a local Kafka if none answers, run the pipeline, and run PLAN to completion."""
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
    runner = subprocess.Popen([sys.executable, "-m", "devline", "run", "--workers", str(workers),
                               "--no-create-topics"], env=env)
    started = time.monotonic()
    try:
        time.sleep(1.0)
        code = subprocess.run([sys.executable, "-m", "devline", "submit", str(plan), "--wait"],
                              env=env).returncode
        if code == 0:
            project = _project_of(plan)
            files = sorted(p for p in (workspace / project).rglob("*") if p.is_file())
            out.print(f"\n{len(files)} files written under {workspace / project}:")
            for f in files:
                out.print(f"  {f.relative_to(workspace)}  ({f.stat().st_size} bytes)")
            out.print(f"demo finished in {time.monotonic() - started:.1f}s. Try: "
                      "devline tail devline.events --from-beginning --count 5")
    finally:
        runner.terminate()
        runner.wait(timeout=90)
    raise typer.Exit(code)


def _project_of(plan: Path) -> str:
    from agents.planner import load_plan_file

    return str(load_plan_file(plan)["project"])
