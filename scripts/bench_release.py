#!/usr/bin/env python3
"""Makespan of one plan with dependents released on *verified* vs on *written* files.

Side by side on one pipeline (`devline run`, real broker, real checkers): the same layered
plan, a share of whose files start with a defect ruff catches (the demo executor's
scripted F821), is submitted with `release: verified` (the default) and `release: written`
(dependents start from the failing version while it is fixed). Two fix flavours:

  * body: the fix repairs a body, the interface is unchanged, so the speculation is free;
  * interface: the fix renames the module's function, so every dependent that already ran
    against the failing version runs again.

    .venv/bin/python scripts/bench_release.py --layers 5 --width 4 --defects 0.3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import (
    BenchError,
    delete_topics,
    run_plan,
    running_pipeline,
    wait_until_ready,
)

from devline.settings import Settings
from streams.topics import create_topics


def plan(layers: int, width: int, defects: float, duration: float, release: str,
         flavour: str, seed: int, run: str) -> dict[str, Any]:
    """`layers` x `width` modules; each imports one or two of the layer before."""
    rng = random.Random(seed)
    files = []
    for layer in range(layers):
        for i in range(width):
            path = f"pkg/l{layer}_m{i}.py"
            deps = sorted({f"pkg/l{layer - 1}_m{rng.randrange(width)}.py"
                           for _ in range(1 + rng.randrange(2))}) if layer else []
            imports = "".join(f"from pkg.{Path(d).stem} import f_{Path(d).stem}\n"
                              for d in deps)
            body = " + ".join(f"f_{Path(d).stem}()" for d in deps) or "0"
            name = f"f_l{layer}_m{i}"
            content = f"# {run}\n{imports}\n\ndef {name}():\n    return {body} + 1\n"
            sim: dict[str, Any] = {"duration_s": duration}
            if rng.random() < defects:
                sim["qa_fail_first"] = 1
                if flavour == "interface":  # the fix adds a new public function
                    sim["fixed_content"] = content + f"\n\ndef {name}_v2():\n    return 2\n"
            files.append({"path": path, "content": content, "depends_on": deps,
                          "simulate": sim})
    return {"project": f"rel-{run}", "name": f"release {release} {flavour}",
            "options": {"executor": "demo", "release": release, "integration": "off"},
            "files": files}


async def one(settings: Settings, spec: dict[str, Any]) -> dict[str, float]:
    events: list[Any] = []
    await asyncio.wait_for(run_plan(settings, spec, events, 120), 900)
    done = next(v for _, k, v in events if k == "PlanCompleted")
    return {"makespan": done["makespan_ms"] / 1000, "runs": done["executor_runs"],
            "fixes": sum(1 for _, k, v in events if k == "TaskRetryScheduled"
                         and v.get("kind") == "fix"),
            "dispatches": sum(1 for _, k, _ in events if k == "TaskDispatched")}


async def bench(args: argparse.Namespace, settings: Settings, log: Path) -> list[tuple[Any, ...]]:
    await create_topics(settings)
    rows = []
    with running_pipeline(settings, args.workers, log):
        await asyncio.wait_for(wait_until_ready(settings, args.workers, settle=2.0), 120)
        for flavour in ("body", "interface"):
            for rep in range(args.repeat):
                for release in ("verified", "written"):
                    run = uuid.uuid4().hex[:6]
                    spec = plan(args.layers, args.width, args.defects, args.duration, release,
                                flavour, args.seed + rep, run)
                    got = await one(settings, spec)
                    rows.append((flavour, rep, release, got))
                    print(f"  {flavour:9} #{rep} {release:8} makespan {got['makespan']:6.2f}s "
                          f"dispatches {got['dispatches']:3} fixes {got['fixes']}", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=5, help="dependency layers (default 5)")
    ap.add_argument("--width", type=int, default=4, help="modules per layer (default 4)")
    ap.add_argument("--defects", type=float, default=0.3,
                    help="share of files whose first version fails ruff (default 0.3)")
    ap.add_argument("--duration", type=float, default=0.5,
                    help="seconds the demo executor takes per file (default 0.5)")
    ap.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    ap.add_argument("--repeat", type=int, default=2, help="plans per variant (default 2)")
    ap.add_argument("--seed", type=int, default=1, help="plan shape and defects (default 1)")
    ap.add_argument("--bootstrap", default=os.environ.get("DEVLINE_BOOTSTRAP", "127.0.0.1:9092"),
                    help="Kafka bootstrap (env DEVLINE_BOOTSTRAP)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="devline-rel-"))
    settings = Settings(bootstrap=args.bootstrap, topic_prefix=f"rel{uuid.uuid4().hex[:8]}.",
                        workspace=tmp / "out", data_dir=tmp / "data")
    print(f"{args.layers}x{args.width} files, {args.defects:.0%} start with a defect, "
          f"{args.duration}s per file, {args.workers} workers")
    try:
        rows = asyncio.run(bench(args, settings, tmp / "run.log"))
    except BenchError as exc:
        print(f"devline run failed: {exc} (log {tmp / 'run.log'})")
        return 1
    finally:
        asyncio.run(delete_topics(settings))
    print(f"\n{'fix changes':12} {'release':9} {'makespan s (mean)':>18} {'dispatches':>11}")
    for flavour in ("body", "interface"):
        for release in ("verified", "written"):
            got = [r[3] for r in rows if r[0] == flavour and r[2] == release]
            mean = sum(g["makespan"] for g in got) / len(got)
            disp = sum(g["dispatches"] for g in got) / len(got)
            print(f"{flavour:12} {release:9} {mean:18.2f} {disp:11.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
