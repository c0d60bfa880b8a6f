"""`devline replay`, `devline fork`, `devline reset`: debug and operate from the log."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from devline.cli.common import err, out, run_async, settings_of
from devline.errors import ConfigError


def parse_time(text: str) -> int:
    """Milliseconds since the epoch from ISO 8601 (UTC unless it says otherwise) or a
    number of milliseconds."""
    if text.strip().isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r} is not a time: use ISO 8601 (2026-12-05T23:40:00, UTC "
                          "unless an offset is given) or milliseconds since the epoch") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds") \
        if ms else "-"


def _fail(text: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(text)}")
    return typer.Exit(code)


def replay(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN", help="The plan to replay")],
    to: Annotated[int | None, typer.Option(
        "--to", metavar="SEQ", help="Stop after the plan's event number SEQ (a plan's "
        "events are numbered from 1 in log order; --events lists them)")] = None,
    at: Annotated[str | None, typer.Option(
        "--at", metavar="TIME", help="Stop at the last event written at or before TIME (ISO "
        "8601, UTC unless it has an offset, or ms since the epoch)")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Re-derive the processor's decisions (priorities, retries, dead "
        "letters, fixes, timers, cache hits, completion) from the events and report the "
        "first that differs from the log, or that they agree; exit 1 if they differ")
                      ] = False,
    files: Annotated[bool, typer.Option("--files", help="List every file with its state")
                     ] = False,
    timeline: Annotated[bool, typer.Option(
        "--events", help="List the events replayed: seq, offset, type, file, attempt")
                        ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Rebuild a plan's state from the event log, in memory, with no side effects."""
    from agents.replay.state import ReplayError, summary, upto
    from agents.replay.state import replay as fold
    from agents.replay.verify import verify as check
    from streams.replay import plan_events

    settings = settings_of(ctx)
    try:
        at_ms = parse_time(at) if at is not None else None
    except ConfigError as exc:
        raise _fail(f"--at: {exc}", 2) from None
    started = time.perf_counter()
    events = run_async(plan_events(settings, plan_id))
    read_s = time.perf_counter() - started
    if not events:
        raise _fail(f"no events for plan {plan_id!r} in the event log")
    try:
        chosen = upto(events, to, at_ms)
        started = time.perf_counter()
        result = fold(chosen)
        result.total = len(events)
        doc: dict[str, Any] = summary(result, files=files)
        fold_s = time.perf_counter() - started
        verdict = None
        if verify:
            started = time.perf_counter()
            verdict = check(chosen, max_attempts=settings.max_attempts,
                            no_progress_repeats=settings.no_progress_repeats)
            doc["verify"] = verdict.to_dict()
            doc["verify_seconds"] = round(time.perf_counter() - started, 4)
    except ReplayError as exc:
        raise _fail(str(exc), 2) from None
    doc["read_seconds"], doc["replay_seconds"] = round(read_s, 4), round(fold_s, 4)
    if timeline:
        doc["events"] = [{"seq": e.seq, "offset": e.offset, "type": e.event_type or
                          "(undecodable)", "task": (e.value or {}).get("task_id"),
                          "attempt": (e.value or {}).get("attempt")} for e in chosen]
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        for line in _summary_lines(doc):
            out.print(escape(line), soft_wrap=True)
    if verdict is not None and not verdict.agree:
        raise typer.Exit(1)


def _summary_lines(doc: dict[str, Any]) -> list[str]:
    states = ", ".join(f"{k} {v}" for k, v in sorted(doc["tasks"].items())) or "none"
    q = doc["qa"]
    lines = [f"plan {doc['plan_id']} ({doc['name']}) at seq {doc['seq']} of {doc['of']} "
             f"({_when(doc['at'])}): {doc['status']}",
             f"  files {doc['done']}/{doc['files']} done: {states}",
             f"  attempts {doc['attempts']} ({doc['retries']} retries), executor runs "
             f"{doc['executor_runs']}, cache hits {doc['cache_hits']}, fixes {doc['fixes']}, "
             f"dead {doc['dead']}, re-runs {doc['reruns']}",
             f"  QA {q['checks']} checks, {q['skipped']} skipped, {q['failed']} failed; "
             f"tokens {doc['tokens']}, cost {doc['cost']:g}"]
    if doc.get("reason"):
        lines.append(f"  rejected: {doc['reason']}")
    for row in doc.get("file_states") or []:
        lines.append(f"    {row['state']:10} attempt {row['attempt']}  {row['path']}"
                     + ("  (cached)" if row["cached"] else ""))
    for e in doc.get("events") or []:
        lines.append(f"  {e['seq']:>6}  @{e['offset']:<8} {e['type']:20} {e['task'] or ''}"
                     + (f"  attempt {e['attempt']}" if e["attempt"] else ""))
    v = doc.get("verify")
    if v is not None:
        checked = ", ".join(f"{n} {k}" for k, n in sorted(v["checked"].items())) or "none"
        if v["agree"]:
            lines.append(f"verify: agree: every decision in {v['events']} events is what "
                         f"replay derives ({checked} checked; {v['duplicates']} duplicates, "
                         f"{v['refused']} overtaken)")
        else:
            d = v["first"]
            cause = f" (it answers seq {d['cause_seq']})" if d.get("cause_seq") else ""
            lines.append(f"verify: DIVERGES at seq {d['seq']} (offset {d['offset']}, "
                         f"{d['event_type']}{' ' + d['task_id'] if d['task_id'] else ''})"
                         f"{cause}: {d['what']}")
        lines.append(f"  dispatch order: {v['dispatches']} dispatches, {v['out_of_rank']} "
                     "taken while a higher-ranked task of the plan was ready")
    lines.append(f"read {doc['of']} events in {doc['read_seconds']:.2f}s, replayed in "
                 f"{doc['replay_seconds'] * 1000:.0f} ms"
                 + (f", verified in {doc['verify_seconds'] * 1000:.0f} ms" if v else ""))
    return lines


def fork(
    ctx: typer.Context,
    plan_id: Annotated[str, typer.Argument(metavar="PLAN", help="The plan to fork (the source)")],
    at: Annotated[int, typer.Option(
        "--at", metavar="SEQ", help="The source's event number to fork at; snapped back to "
        "the last completion at or before it")],
    executor: Annotated[str | None, typer.Option(
        metavar="NAME", help="Executor for the files the fork runs (default: each file's "
        "own)")] = None,
    rerun: Annotated[list[str] | None, typer.Option(
        "--rerun", metavar="PATH", help="Run this file again even if it was finished "
        "before the fork point (repeat for more)")] = None,
    new_id: Annotated[str | None, typer.Option(
        "--as", metavar="NEW_ID", help="Plan id of the fork (default: SOURCE.forkSEQ-HASH)")
                      ] = None,
    project: Annotated[str | None, typer.Option(
        metavar="PATH", help="Project (output folder) of the fork (default: "
        "SOURCE_PROJECT-NEW_ID)")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Fork even if the source's file list changed after the fork point")
                     ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the fork to completion")
                    ] = False,
    timeout: Annotated[float, typer.Option(
        metavar="SECONDS", help="Seconds to wait for the planner (or with --wait for the "
        "whole fork)")] = 600.0,
) -> None:
    """Start a new plan from a plan's state at an event: files finished before it are kept
    with no executor call (from a journal of the source's results, checked against each
    task's inputs); the rest, and the --rerun files, run again. The source is untouched;
    the fork's options carry its lineage (fork.source, fork.seq, fork.hash)."""
    from agents.executors.config import Executors
    from agents.planning import submission_digest
    from agents.replay.state import ReplayError
    from devline.cli.progress import follow_plan
    from devline.errors import PlanError
    from streams.replay import fork as make_fork

    settings = settings_of(ctx)
    try:
        known = (Executors.from_file(settings.executor_config).available()
                 if settings.executor_config else None)
        started = time.perf_counter()
        plan, record = run_async(make_fork(settings, plan_id, at, executor=executor,
                                           rerun=rerun or [], new_id=new_id, project=project,
                                           force=force, known_executors=known))
    except (ReplayError, PlanError, ConfigError) as exc:
        raise _fail(str(exc), 2) from None
    took = time.perf_counter() - started
    kept = len(plan.journal["tasks"])
    err.print(escape(f"fork {plan.plan_id} of {plan.source} at seq {plan.boundary} (asked "
                     f"{plan.at}): {kept} file(s) kept from the journal, {len(plan.rerun)} "
                     f"to run ({executor or 'their own executor'}); submitted in "
                     f"{took:.2f}s"), soft_wrap=True)
    print(plan.plan_id, flush=True)
    code = run_async(follow_plan(settings, plan.plan_id, submission_digest(record), timeout,
                                 verdict_only=not wait))
    raise typer.Exit(0 if code == 2 and not wait else code)


def reset(
    ctx: typer.Context,
    to_earliest: Annotated[bool, typer.Option(
        "--to-earliest", help="Read plans and events again from the start, into empty "
        "tables: the changelogs of plans, tasks and cache, the dispatch board and this "
        "machine's table stores are deleted (the planner's decisions are kept)")] = False,
    to_datetime: Annotated[str | None, typer.Option(
        "--to-datetime", metavar="TIME", help="Read plans and events again from the first "
        "record at or after TIME (ISO 8601, UTC unless it has an offset, or ms since the "
        "epoch); the tables are kept")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print what the reset would do; change nothing")] = False,
    wait: Annotated[float, typer.Option(
        "--wait", metavar="SECONDS", help="Wait up to this long for processors to leave "
        "their groups before refusing (a stopped processor is a static member: it stays "
        "in its group until its 6 s session timeout)")] = 0.0,
) -> None:
    """Reset the stream processors of this prefix, like Kafka Streams' application reset
    tool: refuses while a processor runs, moves its consumer group's offsets, clears the
    changelogs and local state. Restart the processors afterwards to rebuild the state."""
    from streams.reset import ResetRefused, apply_reset, plan_reset, refusal

    settings = settings_of(ctx)
    try:
        at_ms = parse_time(to_datetime) if to_datetime is not None else None
    except ConfigError as exc:
        raise _fail(f"--to-datetime: {exc}", 2) from None
    if to_earliest == (at_ms is not None):
        raise _fail("give one of --to-earliest and --to-datetime", 2)
    deadline = time.monotonic() + wait
    while True:
        plan = run_async(plan_reset(settings, to_earliest=to_earliest, at_ms=at_ms))
        why = refusal(plan)
        if not why or dry_run or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    lines = plan.describe(settings)
    if dry_run:
        out.print(escape("dry run: " + lines[0]), soft_wrap=True)
        for line in lines[1:]:
            out.print(escape("  would " + line), soft_wrap=True)
        if why:
            err.print(escape(f"a reset now would be refused: {why}"), soft_wrap=True)
        return
    if why:
        raise _fail(f"refused: {why}", 1)
    try:
        run_async(apply_reset(settings, plan))
    except ResetRefused as exc:
        raise _fail(f"refused: {exc}", 1) from None
    out.print(escape(lines[0]), soft_wrap=True)
    for line in lines[1:]:
        out.print(escape("  done: " + line), soft_wrap=True)
