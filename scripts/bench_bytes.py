#!/usr/bin/env python3
"""Bytes written to Kafka per completed file: every record of every topic of one run
(events, work items, changelogs, metrics, ...) summed and divided by the files.

Run it against two checkouts side by side to compare (the code on PYTHONPATH runs):

    .venv/bin/python scripts/bench_bytes.py --files 200 --size 10240
    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before .venv/bin/python scripts/bench_bytes.py --files 200 --size 10240

Each file carries `--size` bytes of known content (the demo executor writes it back), with
a chain of imports so dependencies' outputs reach the work items. Needs a broker
(DEVLINE_BOOTSTRAP, default 127.0.0.1:9092).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devline.launch import running
from devline.settings import Settings
from streams.client import records
from streams.topics import CATALOGUE, create_topics, delete_prefixed_topics


def plan(files: int, size: int) -> dict:
    out = []
    for i in range(files):
        head = f"from m{i - 1:04d} import X{i - 1}\n" if i else ""
        body = f"X{i} = {i}\n"
        pad = "#" * max(0, size - len(head) - len(body) - 1)
        out.append({"path": f"m{i:04d}.py", "description": f"module {i}",
                    "content": head + body + pad + "\n"})
    return {"plan_id": f"bytes-{uuid.uuid4().hex[:8]}", "project": "bytes", "name": "bytes",
            "files": out}


async def topic_bytes(settings: Settings) -> Counter[str]:
    sizes: Counter[str] = Counter()
    for spec in CATALOGUE:
        async for r in records(settings, spec.name, idle_timeout=1.0):
            sizes[spec.name] += len(r.key or b"") + len(r.value or b"") + sum(
                len(k) + len(v or b"") for k, v in (r.headers or ()))
    return sizes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=int, default=10 * 1024, help="bytes per file")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="devline-bytes-"))
    settings = Settings.from_env(topic_prefix=f"bytes{uuid.uuid4().hex[:6]}.",
                                 workspace=work / "out", data_dir=work / "data")
    asyncio.run(create_topics(settings))
    doc = plan(args.files, args.size)
    try:
        with running(settings, ["--workers", "2"], work / "run.log"):
            from tests.harness import submit, wait_for

            plan_id = submit(settings, doc)
            kind, _ = wait_for(settings, plan_id, {"PlanCompleted", "PlanRejected"}, 600)
            if kind != "PlanCompleted":
                print(f"plan {kind}", file=sys.stderr)
                return 1
        sizes = asyncio.run(topic_bytes(settings))
    finally:
        asyncio.run(delete_prefixed_topics(settings))
    total = sum(sizes.values())
    import devline

    print(f"code: {Path(devline.__file__).resolve().parents[1]}")
    print(f"{args.files} files of {args.size} bytes, one chain of imports")
    for name, n in sizes.most_common():
        print(f"  {name:38} {n / args.files:10,.0f} bytes per file")
    print(f"  {'total':38} {total / args.files:10,.0f} bytes per file "
          f"({total / args.files / args.size:.1f}x the file)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
