#!/usr/bin/env python3
"""Start of the read side (`devline observe`) over a long history: a fold from the
beginning vs a start from its snapshot, side by side on the same log.

Logs a history of finished plans (default 20 plans x 2,000 tasks: PlanAccepted, and each
task's TaskDispatched and TaskCompleted, as `bench_restart.py` does), then starts the read
side's service in this process three times and measures until it is caught up:

    full     snapshots off: folds devline.events from the beginning
    first    snapshots on, none written yet: the same fold, then one snapshot on stop
    restore  snapshots on: restores that snapshot and reads on from its offsets

It prints the seconds to caught up, the snapshot's size and how long writing one holds
the service's loop, and the live plans each start ends with (they must be equal).

    .venv/bin/python scripts/bench_observe.py                  # its own broker (19095)
    .venv/bin/python scripts/bench_observe.py --plans 5 --tasks 500
    .venv/bin/python scripts/bench_observe.py --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_restart import produce_history  # noqa: E402
from localbroker import BrokerError, broker  # noqa: E402

from devline.settings import Settings  # noqa: E402
from streams.observe.service import ObserveService  # noqa: E402
from streams.observe.snapshot import Encoder, snapshot_ref  # noqa: E402
from streams.topics import create_topics, delete_prefixed_topics  # noqa: E402


async def start(settings: Settings, within: float) -> dict[str, float | int | str]:
    service = ObserveService(settings)
    began = time.monotonic()
    task = asyncio.create_task(service.run())
    await asyncio.wait_for(service.caught_up.wait(), within)
    caught_up = time.monotonic() - began
    stopping = time.monotonic()
    service.stop()
    await task
    stop_s = time.monotonic() - stopping
    summaries = sorted((pid, str(st.header.get("status")), len(st.tasks))
                       for pid, st in service.plans.plans.items())
    dumping = time.monotonic()  # what a first snapshot holds the read side's loop for
    encoder = Encoder()
    encoder.dump(service.plans, service.rollouts, {}, 0)
    dump_s = time.monotonic() - dumping
    if service.plans.plans:  # then one with a single plan changed
        service.plans.dirty.add(next(iter(service.plans.plans)))
    dumping = time.monotonic()
    encoder.dump(service.plans, service.rollouts, {}, 0)
    one_s = time.monotonic() - dumping
    return {"caught_up_s": round(caught_up, 2), "stop_s": round(stop_s, 2),
            "live_plans": len(summaries), "live_tasks": sum(n for *_, n in summaries),
            "restored": "yes" if service.restored else "no", "state": repr(summaries),
            "dump_s": round(dump_s, 2), "one_s": round(one_s, 3)}


async def run(args: argparse.Namespace, bootstrap: str, data: Path) -> None:
    settings = Settings(bootstrap=bootstrap, topic_prefix=f"bench-observe-{uuid.uuid4().hex[:6]}.",
                        data_dir=data)
    await create_topics(settings)
    try:
        began = time.monotonic()
        events = await produce_history(settings, args.plans, args.tasks, args.width)
        print(f"history: {events} events logged in {time.monotonic() - began:.1f} s",
              flush=True)
        rows = []
        off = settings.model_copy(update={"observe_snapshot_s": 0.0})
        rows.append(("full (snapshots off)", await start(off, args.timeout)))
        rows.append(("first (fold, snapshot on stop)", await start(settings, args.timeout)))
        store = settings.artifact_store()
        digest = await store.get_ref(snapshot_ref(settings.topic_prefix))
        size = len(await store.get(digest) or b"") if digest else 0
        rows.append(("restore (from the snapshot)", await start(settings, args.timeout)))
        print(f"\n{'start':34} {'caught up s':>12} {'stop s':>8} {'live plans':>11} "
              f"{'live tasks':>11} {'restored':>9}")
        for name, r in rows:
            print(f"{name:34} {r['caught_up_s']:>12} {r['stop_s']:>8} {r['live_plans']:>11} "
                  f"{r['live_tasks']:>11} {r['restored']:>9}")
        print(f"\nsnapshot: {size / 1e6:.2f} MB compressed; encoding holds the read side's "
              f"loop for {rows[1][1]['dump_s']} s the first time, {rows[1][1]['one_s']} s "
              "when one plan changed since the last (every observe_snapshot_s)")
        same = len({r["state"] for _, r in rows}) == 1
        print(f"live plans equal in all three starts: {same}")
    finally:
        await delete_prefixed_topics(settings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--plans", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=2000, help="finished tasks per plan")
    parser.add_argument("--width", type=int, default=200, help="tasks per dependency layer")
    parser.add_argument("--port", type=int, default=19095)
    parser.add_argument("--bootstrap", default=None, help="use this broker instead")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a start may take")
    args = parser.parse_args()
    try:
        with broker(args.port, args.bootstrap) as bootstrap, \
                tempfile.TemporaryDirectory(prefix="devline-observe-") as data:
            asyncio.run(run(args, bootstrap, Path(data)))
    except BrokerError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
