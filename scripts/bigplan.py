#!/usr/bin/env python3
"""A plan of 20,000 files with 1 KB descriptions, run to completion on a local broker.

Prints the record sizes with and without claim checks side by side (inline, the plan does
not fit a record), the planner's time to accept, the makespan, the processor's peak memory
and whether every file reached the disk with the hash its TaskCompleted reports.

    .venv/bin/python scripts/bigplan.py                # 20,000 files, its own broker
    .venv/bin/python scripts/bigplan.py --files 2000   # quicker

The broker runs on --port (default 19093, scripts/kafka-local) so nothing else is disturbed;
--bootstrap uses an existing one instead.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from localbroker import BrokerError, broker  # noqa: E402

from agents.planning import accept, plan_record  # noqa: E402
from agents.planning.briefs import with_briefs  # noqa: E402
from devline.settings import Settings  # noqa: E402
from devline.supervisor import child_env  # noqa: E402
from schemas.codec import Codec  # noqa: E402
from streams import topics as T  # noqa: E402
from streams.client import publish_plan, records  # noqa: E402
from streams.topics import create_topics, delete_prefixed_topics  # noqa: E402

WORDS = ("parse", "render", "cache", "index", "route", "store", "fetch", "merge", "score",
         "queue", "token", "batch", "shard", "frame", "graph", "model", "trace", "event")


def description(rng: random.Random, size: int) -> str:
    text: list[str] = []
    length = 0
    while length < size:
        text.append(rng.choice(WORDS))
        length += len(text[-1]) + 1
    return " ".join(text)[:size]


def big_plan(files: int, width: int, desc_bytes: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    out = []
    for i in range(files):
        layer = i // width
        deps = [] if layer == 0 else sorted({
            f"m{rng.randrange((layer - 1) * width, layer * width):05d}.py" for _ in range(2)})
        out.append({"path": f"m{i:05d}.py", "description": description(rng, desc_bytes),
                    "depends_on": deps})
    return {"plan_id": f"big-{uuid.uuid4().hex[:8]}", "project": "big", "name": "big plan",
            "options": {"executor": "demo"}, "files": out}


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def processors(group: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getpgid(int(d.name)) != group:
                continue
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue
        if b"processor" in cmd and b"--standby" not in cmd:
            found.append(int(d.name))
    return found


async def wait_events(settings: Settings, plan_id: str, run_pid: int, t0: float
                      ) -> dict[str, Any]:
    """Follow devline.events: when the plan was accepted and finished; peak memory."""
    codec = Codec.from_settings(settings)
    seen: dict[str, Any] = {"done": 0, "peak_mb": 0.0}
    last = time.monotonic()
    async for r in records(settings, T.EVENTS, idle_timeout=None, follow=True):
        try:
            et, v = codec.decode(r.value or b"")
        except Exception:  # noqa: S112 - not ours
            continue
        if v.get("plan_id") != plan_id:
            continue
        if et == "PlanAccepted":
            seen["accepted_s"] = time.time() - t0
            seen["accepted_bytes"] = len(r.value or b"")
            seen["tasks"] = len(v["tasks"])
        elif et == "TaskCompleted":
            seen["done"] += 1
            seen.setdefault("hashes", {})[v["path"]] = v["content_hash"]
        elif et in ("PlanCompleted", "PlanRejected"):
            seen["finished_s"] = time.time() - t0
            seen["outcome"] = et
            return seen
        if time.monotonic() - last > 2:
            last = time.monotonic()
            seen["peak_mb"] = max([seen["peak_mb"], *map(peak_rss_mb, processors(run_pid))])
            print(f"  {seen['done']}/{seen.get('tasks', '?')} done, "
                  f"{time.time() - t0:.0f}s", flush=True)
    return seen


def measure_sizes(settings: Settings, plan: dict[str, Any]) -> dict[str, Any]:
    """Record sizes with and without claim checks, and the planner's pure work."""
    codec = Codec.from_settings(settings)
    sizes: dict[str, Any] = {
        "plan_submitted_inline_mb": len(codec.encode_unbounded("PlanSubmitted", plan)) / 2**20}
    started = time.perf_counter()
    accepted = accept(plan, accepted_at=0)
    sizes["accept_s"] = time.perf_counter() - started
    sizes["plan_accepted_inline_mb"] = len(
        codec.encode_unbounded("PlanAccepted", accepted)) / 2**20
    accepted["tasks"], blobs = with_briefs(accepted["tasks"])
    sizes["plan_accepted_briefs_mb"] = len(codec.encode("PlanAccepted", accepted)) / 2**20
    sizes["briefs"] = len(blobs)
    return sizes


async def follow_run(args: argparse.Namespace, settings: Settings, plan: dict[str, Any],
                     run_pid: int) -> dict[str, Any]:
    t0 = time.time()
    await publish_plan(settings, plan)
    out: dict[str, Any] = {"submit_s": time.time() - t0}
    seen = await asyncio.wait_for(wait_events(settings, plan["plan_id"], run_pid, t0),
                                  args.timeout)
    hashes = seen.pop("hashes", {})
    deadline = time.time() + 120
    good = 0
    while time.time() < deadline:  # the sink is its own stage
        good = await asyncio.to_thread(files_ok, settings.workspace / "big", hashes)
        if good == len(hashes):
            break
        await asyncio.sleep(1)
    return {**out, **seen, "files_ok": f"{good}/{len(hashes)}",
            "files_on_disk_s": time.time() - t0}


def files_ok(root: Path, hashes: dict[str, str]) -> int:
    return sum(1 for p, h in hashes.items() if (root / p).exists()
               and hashlib.sha256((root / p).read_bytes()).hexdigest() == h)


def run_plan(args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, Any]:
    settings = Settings.from_env(bootstrap=bootstrap, topic_prefix=f"big{uuid.uuid4().hex[:6]}.",
                                 workspace=work / "out", data_dir=work / "data",
                                 worker_slots=args.slots)
    asyncio.run(create_topics(settings))
    plan = plan_record(big_plan(args.files, args.width, args.desc_bytes, args.seed))
    sizes = measure_sizes(settings, plan)
    with open(work / "run.log", "wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "devline", "run", "--workers", str(args.workers),
             "--no-create-topics"], env=child_env(settings), stdout=log,
            stderr=subprocess.STDOUT, cwd=str(ROOT), start_new_session=True)
        try:
            seen = asyncio.run(follow_run(args, settings, plan, run.pid))
        finally:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
            asyncio.run(delete_prefixed_topics(settings))
    return {"files": args.files, "desc_bytes": args.desc_bytes, **sizes, **seen}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--width", type=int, default=1000, help="files per layer")
    parser.add_argument("--desc-bytes", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--slots", type=int, default=4, help="tasks per worker at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=19093)
    parser.add_argument("--bootstrap", default=None, help="use this broker instead")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    try:
        with broker(args.port, args.bootstrap) as bootstrap:
            result = run_plan(args, bootstrap, Path(tempfile.mkdtemp(prefix="devline-bigplan-")))
    except BrokerError as exc:
        print(exc, file=sys.stderr)
        return 1
    for k, v in result.items():
        print(f"  {k:26} {round(v, 2) if isinstance(v, float) else v}")
    print(json.dumps(result))
    return 0 if result.get("outcome") == "PlanCompleted" and \
        result["files_ok"].split("/")[0] == result["files_ok"].split("/")[1] else 1


if __name__ == "__main__":
    raise SystemExit(main())
