"""Read-side snapshots: restoring one and folding on gives the state of a fold from the
beginning; a snapshot of another version, or garbage, is refused with the reason."""

from __future__ import annotations

import json
import zlib

import pytest

from streams import topics as T
from streams.observe.projection import PlanProjection
from streams.observe.rollouts import RolloutView
from streams.observe.snapshot import (
    MAGIC,
    Encoder,
    SnapshotError,
    dump,
    load,
    restore,
    snapshot_ref,
)
from tests.samples import NOW_MS, PLAN, sample_event
from tests.sim import CODEC
from tests.test_crash_points import CLEAN

EVENTS = [(r.offset, *CODEC.decode(r.value or b"")) for r in CLEAN.log.topics[T.EVENTS]]
ROLLOUT = [("RolloutStarted", NOW_MS), ("RolloutDeployDone", NOW_MS + 10),
           ("RolloutAction", NOW_MS + 11)]


def fold(plans: PlanProjection, records: list) -> None:
    for offset, event_type, value in records:
        plans.fresh(value)
        plans.apply(event_type, value, offset)


def state(plans: PlanProjection) -> dict:
    return {pid: st.snapshot() | {"clock": st.clock} for pid, st in plans.plans.items()}


@pytest.mark.parametrize("cut", [1, len(EVENTS) // 3, len(EVENTS) // 2, len(EVENTS) - 1])
def test_restore_then_fold_on_equals_a_fold_from_the_beginning(cut: int) -> None:
    whole = PlanProjection(retention_ms=10**12)
    fold(whole, EVENTS)
    early, views = PlanProjection(retention_ms=10**12), RolloutView()
    fold(early, EVENTS[:cut])
    for kind, at in ROLLOUT[:2]:
        views.record(PLAN, kind, sample_event(kind), at)
    data = dump(early, views, {T.EVENTS: {0: EVENTS[cut][0]}}, NOW_MS)
    snap = load(data)
    assert snap.offsets == {T.EVENTS: {0: EVENTS[cut][0]}} and snap.taken_at_ms == NOW_MS
    later, later_views = PlanProjection(retention_ms=10**12), RolloutView()
    restore(snap, later, later_views)
    fold(later, EVENTS[cut:])
    assert len(whole.plans) == 2 and state(later) == state(whole)
    assert later.summary("p1") == whole.summary("p1")
    kind, at = ROLLOUT[2]
    for v in (views, later_views):
        v.record(PLAN, kind, sample_event(kind), at)
    assert later_views.view(PLAN, NOW_MS + 20) == views.view(PLAN, NOW_MS + 20)
    # Event ids read before the snapshot still count once after it.
    counted = [v for _, _, v in EVENTS[:cut] if v.get("event_id")]
    assert all(later.fresh(v) is False for v in counted)
    assert later.fresh({"event_id": "never seen"}) is True


def framed(header: dict) -> bytes:
    body = zlib.compress(json.dumps(header).encode())
    return MAGIC + len(body).to_bytes(8, "big") + body


def test_garbage_and_other_versions_are_refused_with_the_reason() -> None:
    with pytest.raises(SnapshotError, match="not a snapshot"):
        load(b"not a snapshot at all")
    with pytest.raises(SnapshotError, match="not a snapshot"):
        load(MAGIC + (5).to_bytes(8, "big") + b"12345")
    with pytest.raises(SnapshotError, match="version 99"):
        load(framed({"version": 99}))
    with pytest.raises(SnapshotError, match="incomplete"):
        load(framed({"version": 1, "offsets": {}}))
    whole = dump(*folded(len(EVENTS)), {}, NOW_MS)
    with pytest.raises(SnapshotError, match="incomplete"):
        load(whole[:-10])  # a plan's part cut short


def folded(n: int) -> tuple[PlanProjection, RolloutView]:
    plans = PlanProjection(retention_ms=10**12)
    fold(plans, EVENTS[:n])
    return plans, RolloutView()


def test_a_snapshot_encodes_again_only_the_plans_that_changed() -> None:
    last = max(i for i, e in enumerate(EVENTS) if e[2].get("plan_id") == "p1")
    plans, views = PlanProjection(retention_ms=10**12), RolloutView()
    fold(plans, EVENTS[:last] + EVENTS[last + 1:])  # all but p1's last event
    encoder = Encoder()
    encoder.dump(plans, views, {}, NOW_MS)
    parts = dict(encoder.parts)
    assert set(parts) == {"p1", "p2"} and not plans.dirty
    fold(plans, [EVENTS[last]])
    again = load(encoder.dump(plans, views, {}, NOW_MS))
    assert encoder.parts["p2"] is parts["p2"]  # unchanged: not encoded again
    assert encoder.parts["p1"] is not parts["p1"]
    assert {pid: st.snapshot() for pid, st in again.plans.items()} == \
        {pid: st.snapshot() for pid, st in plans.plans.items()}
    plans.plans.pop("p1")  # evicted: gone from the next snapshot too
    assert set(load(encoder.dump(plans, views, {}, NOW_MS)).plans) == {"p2"}


def test_each_prefix_has_its_own_ref() -> None:
    assert snapshot_ref("a.") != snapshot_ref("b.") and len(snapshot_ref("")) == 64
