"""`devline rollouts`: fold every plan's rollout from `devline.rollouts` and carry out its actions.

On start the stage reads `devline.rollouts` from the beginning (all partitions) up to the
end offsets it saw, folding each event with `agents.rollout.apply(now_ms=record
timestamp)` but executing nothing: history is not redone. Once caught up it re-arms the
deadlines from `pending_timers(state)` (same `due_at`) and redoes the effects whose
outcome is not in the log: a weight or a rollback not confirmed, a measurement round or a
comparison not answered, an escalation without its `RolloutAction` record. From then on
every event read back is folded and its actions executed.

It also reads `devline.events` (own consumer group) and starts a rollout when a plan whose
`PlanAccepted` options ask for one completes. The group's committed offset never passes a
`PlanAccepted` whose plan has not completed, so its options survive a restart.

State has a lifetime: a rollout that ended longer than the plan retention ago is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.rollout import (
    Action,
    ActionKind,
    EventType,
    RolloutEventError,
    apply,
    initial_state,
    is_open,
    outstanding,
    parse_spec,
    pending_timers,
)
from agents.rollout.attribution import FIX_MAX_FILES, HASH_PREFIX, fixed_revision, implicated
from agents.rollout.controls import ops_abort_refusal
from agents.scheduling.fixes import EVIDENCE_MAX
from devline.errors import DecodeError, PlanError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import reached, topic_partitions
from streams.emit import dead_letter_headers, headers_for, stored_by_reference
from streams.lifecycle import running
from streams.rollout.config import RolloutConfig
from streams.rollout.effects import Effects
from streams.rollout.records import (
    ACTION,
    AVRO_OF,
    dumps,
    make_id,
    rollout_options,
    spec_options,
    to_event,
    wants_rollout,
)

log = logging.getLogger(__name__)
TICK_S = 0.05
ONCE = (ActionKind.ESCALATE, ActionKind.FIX_TASKS)
# The plan events the stage reads (besides TaskCompleted of plans it builds manifests of).
PLAN_EVENTS = frozenset({b"PlanAccepted", b"PlanCompleted", b"PlanRetired", b"PlanRejected",
                         b"RolloutFixRequested"})


def wall_ms() -> int:
    return int(time.time() * 1000)


class RolloutStage:
    """One process folds every rollout (single instance per prefix)."""

    def __init__(self, settings: Settings, config: RolloutConfig,
                 clock: Callable[[], int] = wall_ms) -> None:
        self.settings, self.config, self.clock = settings, config, clock
        self.codec = Codec.from_settings(settings)
        self.states: dict[str, dict[str, Any]] = {}
        self.options: dict[str, dict[str, str]] = {}
        self.timers: dict[tuple[str, str], int] = {}  # (plan, kind) -> due_at
        self.unanswered: dict[str, tuple[str, str, int, Action]] = {}  # escalations in replay
        self.accepted: dict[str, tuple[int, int, dict[str, str], str]] = {}
        # Manifests (path -> content hash prefix): of the revisions rolled out (from their
        # RolloutStarted), and of plans being built (from their TaskCompleted events).
        self.revisions: dict[str, dict[str, str]] = {}
        self.building: dict[str, dict[str, str]] = {}
        self.live = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.producer: AIOKafkaProducer | None = None
        self.effects = Effects(config, self.emit, clock, self.request_fix)
        self.caught_up = asyncio.Event()
        self.bookmarks: dict[TopicPartition, int] = {}  # dead-lettered below these

    # -- the log ---------------------------------------------------------------------
    async def emit(self, topic: str, event_type: str, record: dict[str, Any], key: str) -> None:
        """Produce one record stamped with the stage's clock (the fold's `now_ms`)."""
        assert self.producer is not None
        value = self.codec.encode(event_type, record)
        await self.producer.send_and_wait(self.settings.topic(topic), value=value,
                                          key=key.encode(), timestamp_ms=self.clock(),
                                          headers=headers_for(event_type, record))

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set (or cancelled)."""
        stop = stop or asyncio.Event()
        s = self.settings
        self.producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all",
                                         max_request_size=s.max_message_bytes,
                                         **s.kafka_common())
        # Assigned, read from the beginning; its group only bookmarks how far a live stage
        # got, so a poison record is dead-lettered once, not on every restart.
        rollouts = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                                    group_id=s.group("devline-rollouts-log"),
                                    fetch_max_wait_ms=50, **s.kafka_common())
        # A static member: a restarted stage (one per prefix) takes the partitions back at
        # once instead of waiting out the killed one's session.
        events = AIOKafkaConsumer(s.topic(T.EVENTS), bootstrap_servers=s.bootstrap,
                                  group_id=s.group("devline-rollouts"),
                                  group_instance_id=s.group("devline-rollouts-stage"),
                                  session_timeout_ms=10_000, heartbeat_interval_ms=1_000,
                                  enable_auto_commit=False, auto_offset_reset="earliest",
                                  fetch_max_wait_ms=50, **s.kafka_common())
        # Acted `rollback` decisions of the ops agent become aborts (own group; from the
        # earliest on a first start: a decision made before its run started is refused).
        ops = AIOKafkaConsumer(s.topic(T.OPS), bootstrap_servers=s.bootstrap,
                               group_id=s.group("devline-rollouts-ops"),
                               enable_auto_commit=False, auto_offset_reset="earliest",
                               fetch_max_wait_ms=50, **s.kafka_common())
        async with running(self.producer), running(rollouts):
            try:
                parts = await topic_partitions(rollouts, s.topic(T.ROLLOUTS))
                rollouts.assign(parts)
                for tp in parts:
                    self.bookmarks[tp] = await rollouts.committed(tp) or 0
                await rollouts.seek_to_beginning(*parts)
                ends = await rollouts.end_offsets(parts)
                async with running(events), running(ops):
                    await self._loop(stop, rollouts, events, ends, ops)
            finally:
                for task in list(self.tasks):
                    task.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _loop(self, stop: asyncio.Event, rollouts: AIOKafkaConsumer,
                    events: AIOKafkaConsumer, ends: dict[TopicPartition, int],
                    ops: AIOKafkaConsumer) -> None:
        last_sweep = 0.0
        while not stop.is_set():
            batch = await rollouts.getmany(timeout_ms=int(TICK_S * 1000))
            for tp in sorted(batch, key=lambda t: t.partition):
                for record in batch[tp]:
                    poison = self._on_rollout(record)
                    if poison is not None and record.offset >= self.bookmarks.get(tp, 0):
                        await self._dead_letter(record, poison)
                if self.live:
                    await rollouts.commit({tp: batch[tp][-1].offset + 1})
            if not self.live and await reached(rollouts, ends):
                self._catch_up()
                # Everything replayed is handled (poison dead-lettered): bookmark it.
                await rollouts.commit({tp: await rollouts.position(tp) for tp in ends})
            if self.live:
                got = await events.getmany(timeout_ms=10)
                for tp, recs in got.items():
                    for record in recs:
                        await self._on_plan_event(record)
                    await events.commit({tp: self._commit_offset(tp, recs[-1].offset + 1)})
                decided = await ops.getmany(timeout_ms=0)
                for tp, recs in decided.items():
                    for record in recs:
                        await self._on_ops_decision(record)
                    await ops.commit({tp: recs[-1].offset + 1})
                await self._fire_timers()
                if time.monotonic() - last_sweep > 5:
                    last_sweep = time.monotonic()
                    self._sweep()

    # -- folding ---------------------------------------------------------------------
    async def _dead_letter(self, record: Any, reason: str) -> None:
        """A record of devline.rollouts the fold cannot read goes to the DLQ with the reason
        (big ones by reference); the stage goes on."""
        assert self.producer is not None
        log.warning("devline.rollouts[%d]@%d: dead-lettered: %s", record.partition,
                    record.offset, reason)
        headers = dead_letter_headers(reason, topic=record.topic, partition=record.partition,
                                      offset=record.offset)
        letter = await stored_by_reference(self.settings.artifact_store(), record.value,
                                           record.key, headers)
        await self.producer.send_and_wait(self.settings.topic(T.DLQ), key=letter.key,
                                          value=letter.value, headers=letter.headers)

    def _on_rollout(self, record: Any) -> str | None:
        """Fold one record of devline.rollouts; the reason when it is poison."""
        try:
            avro_type, value = self.codec.decode(record.value or b"")
        except DecodeError as exc:
            return f"undecodable: {exc}"
        if avro_type == ACTION:
            self.unanswered.pop(value["event_id"], None)
            return None
        found = to_event(avro_type, value)
        if found is None:
            return None
        kind, event = found
        plan = str(value["plan_id"])
        state = self.states.setdefault(plan, initial_state(plan))
        if kind is EventType.ROLLOUT_STARTED:
            self.options[plan] = dict(value.get("options") or {})
            if value.get("manifest"):
                self.revisions[str(value["revision"])] = dict(value["manifest"])
        try:
            actions = apply(state, kind.value, event, now_ms=int(record.timestamp))
        except RolloutEventError as exc:
            return f"rollout {plan}: {avro_type} not applicable: {exc}"
        trigger = str(value["event_id"])
        numbered = list(enumerate(actions))
        for _, action in numbered:
            if action.kind is ActionKind.ARM_TIMER:
                self.timers[(plan, str(action.data["kind"]))] = int(action.data["due_at"])
        if self.live:
            self._execute(plan, trigger, numbered)
        else:
            for index, action in numbered:
                if action.kind in ONCE:
                    self.unanswered[make_id(plan, "action", trigger, index)] = (
                        plan, trigger, index, action)
        return None

    def _execute(self, plan: str, trigger: str, numbered: list[tuple[int, Action]]) -> None:
        if not numbered:
            return
        state = dict(self.states[plan])
        task = asyncio.create_task(self.effects.run(plan, trigger, numbered, state,
                                                    self.options.get(plan, {})))
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("rollout effect failed", exc_info=task.exception())

    def _catch_up(self) -> None:
        """Caught up with the log: re-arm the deadlines, redo the unanswered effects."""
        self.live = True
        self.timers = {}
        for plan, state in self.states.items():
            for arm in pending_timers(state):
                self.timers[(plan, str(arm.data["kind"]))] = int(arm.data["due_at"])
            redo = outstanding(state)
            if redo:
                self._execute(plan, make_id(plan, "resume", state["updated_at"]),
                              list(enumerate(redo)))
        for plan, trigger, index, action in self.unanswered.values():
            if plan in self.states:
                self._execute(plan, trigger, [(index, action)])
        self.unanswered.clear()
        log.info("rollouts caught up: %d rollout(s), %d timer(s) armed", len(self.states),
                 len(self.timers))
        self.caught_up.set()

    async def _fire_timers(self) -> None:
        now = self.clock()
        for (plan, kind), due in sorted(self.timers.items(), key=lambda kv: kv[1]):
            if due > now:
                continue
            state = self.states.get(plan)
            del self.timers[(plan, kind)]
            if state is None or state["timers"].get(kind) != due:
                continue  # disarmed or re-armed since
            avro = AVRO_OF[EventType.TIMER_FIRED]
            try:
                await self.emit(T.ROLLOUTS, avro, {
                    "event_id": make_id(plan, avro, state["run"], kind, due), "plan_id": plan,
                    "run": state["run"], "kind": kind, "due_at": due, "at": now}, plan)
            except Exception:
                self.timers[(plan, kind)] = due  # try again on the next tick
                raise

    def _sweep(self) -> None:
        horizon = self.clock() - int(self.settings.plan_retention_s * 1000)
        for plan, state in list(self.states.items()):
            if not is_open(state) and int(state.get("updated_at") or 0) < horizon:
                del self.states[plan]
                self.options.pop(plan, None)
        named = {s.get(k) for s in self.states.values() for k in ("revision", "stable_revision")}
        for revision in set(self.revisions) - named:
            del self.revisions[revision]

    # -- starting rollouts -----------------------------------------------------------
    async def _on_plan_event(self, record: Any) -> None:
        if not self._wanted(record):
            return
        try:
            event_type, value = self.codec.decode(record.value or b"")
        except DecodeError:
            return
        plan = value.get("plan_id")
        if not isinstance(plan, str):
            return
        if event_type == "PlanAccepted" and wants_rollout(value.get("options") or {}):
            revision = value.get("options", {}).get("rollout.revision") or \
                (value.get("digest") or make_id(plan, value["accepted_at"]))[:12]
            self.accepted[plan] = (record.partition, record.offset,
                                   rollout_options(value["options"]), revision)
            self.building[plan] = {}
        elif event_type == "TaskCompleted" and plan in self.building:
            self.building[plan][value["path"]] = str(value["content_hash"])[:HASH_PREFIX]
        elif event_type == "RolloutFixRequested":
            self._on_fix_requested(record, plan, value)
        elif event_type in ("PlanRetired", "PlanRejected"):
            self.accepted.pop(plan, None)
            self.building.pop(plan, None)
        elif event_type == "PlanCompleted" and plan in self.accepted:
            _, _, options, revision = self.accepted.pop(plan)
            manifest = self.building.pop(plan, {})
            if value.get("failed"):
                log.info("rollout %s: not started, %d task(s) failed", plan, value["failed"])
                return
            await self.start(plan, revision, options, manifest)

    async def _on_ops_decision(self, record: Any) -> None:
        """An acted ops `rollback` of a rollout under way: a RolloutControl abort by `ops`,
        whose id is the decision's (read again, it is the same control)."""
        try:
            event_type, value = self.codec.decode(record.value or b"")
        except DecodeError:
            return  # the ops topic's own poison; not ours to judge
        plan = value.get("plan_id")
        if event_type != "OpsDecision" or value.get("action") != "rollback" or not plan:
            return
        state = self.states.get(plan)
        refusal = "no rollout" if state is None else ops_abort_refusal(state, value)
        if refusal is not None:
            log.info("rollout %s: ops decision %s not acted on: %s", plan,
                     value.get("decision_id"), refusal)
            return
        avro = AVRO_OF[EventType.ROLLOUT_CONTROL]
        await self.emit(T.ROLLOUTS, avro, {
            "event_id": make_id(plan, "ops", value["decision_id"]), "plan_id": plan,
            "action": "abort", "by": "ops",
            "reason": f"ops decision {value['decision_id']}: {value.get('reason')}",
            "at": self.clock()}, plan)

    def _wanted(self, record: Any) -> bool:
        """Whether a plan event may matter here, from its headers (devline sets them on
        every event); most of the log (dispatches, retries, other plans' completions) is
        not decoded at all. A record without them is decoded to find out."""
        headers = dict(record.headers or ())
        kind = headers.get("event-type")
        if kind is None:
            return True
        if kind == b"TaskCompleted":
            return headers.get("plan-id", b"").decode("utf-8", "replace") in self.building
        return kind in PLAN_EVENTS

    def _on_fix_requested(self, record: Any, plan: str, value: dict[str, Any]) -> None:
        """The plan is fixing the files a failed canary implicated: when it completes
        again, its fixed revision is rolled out (the offset is held until then, so a
        restarted stage reads the fix's completions again)."""
        state = self.states.get(plan)
        revision = str(value["revision"])
        if state is None or state.get("revision") != revision or plan in self.accepted:
            return  # an old request: the plan has moved on
        self.accepted[plan] = (record.partition, record.offset, self.options.get(plan, {}),
                               fixed_revision(revision))
        self.building[plan] = dict(self.revisions.get(revision, {}))

    async def request_fix(self, plan: str, event_id: str, data: Mapping[str, Any],
                          state: Mapping[str, Any], options: Mapping[str, str]
                          ) -> tuple[bool, str]:
        """Fix tasks for the files of a failed canary that differ from the stable
        revision, as a `RolloutFixRequested` the processor folds; (False, why) when no
        file can be blamed."""
        try:
            limit = int(options.get("rollout.fix_max_files", FIX_MAX_FILES))
        except ValueError:
            limit = FIX_MAX_FILES
        stable = state.get("stable_revision")
        found = implicated(self.revisions.get(str(state["revision"]), {}),
                           self.revisions.get(stable) if stable else None, limit)
        if not found.paths:
            return False, found.why
        evidence = dumps(data.get("evidence"))
        if len(evidence) > EVIDENCE_MAX:
            evidence = evidence[:EVIDENCE_MAX - 20] + "...(truncated)"
        await self.emit(T.EVENTS, "RolloutFixRequested", {
            "event_id": event_id, "plan_id": plan, "revision": str(state["revision"]),
            "stable_revision": stable, "run": str(data.get("run") or state.get("run")),
            "paths": list(found.paths), "reason": str(data.get("reason")),
            "evidence": evidence, "at": self.clock()}, plan)
        log.info("rollout %s: fix tasks requested for %s (%s)", plan, ", ".join(found.paths),
                 found.why)
        return True, f"fix requested: {', '.join(found.paths)}"

    def _commit_offset(self, tp: TopicPartition, next_offset: int) -> int:
        held = [off for part, off, _, _ in self.accepted.values() if part == tp.partition]
        return min([*held, next_offset])

    async def start(self, plan: str, revision: str, options: dict[str, str],
                    manifest: dict[str, str] | None = None) -> None:
        """Produce the RolloutStarted of `revision` (once: the id is the plan and revision)."""
        state = self.states.get(plan)
        if state is not None and state.get("revision") == revision:
            return
        try:
            spec = parse_spec(spec_options(options), self.config.rules())
        except PlanError as exc:
            await self.emit(T.ESCALATIONS, "Escalation", {
                "event_id": make_id(plan, "rollout-refused", revision), "plan_id": plan,
                "task_id": None, "kind": "rollout_rejected",
                "reason": f"rollout of {revision} not started: {exc} ({exc.field})",
                "attempts": 0, "errors": [], "last_output": None, "at": self.clock()}, plan)
            return
        avro = AVRO_OF[EventType.ROLLOUT_STARTED]
        await self.emit(T.ROLLOUTS, avro, {
            "event_id": make_id(plan, avro, revision), "plan_id": plan, "revision": revision,
            "stable_revision": options.get("rollout.stable_revision"),
            "spec_json": json.dumps(spec.to_dict()), "options": options,
            "manifest": manifest or {}, "at": self.clock()}, plan)
