"""Replay, verify, fork and reset against the real broker and pipeline, through the CLI."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devline.settings import Settings
from devline.supervisor import child_env
from schemas.codec import Codec
from streams import topics as T
from streams.client import plan_partition, send_raw
from streams.emit import headers_for
from streams.replay import plan_events
from tests.harness import (
    events,
    raw_records,
    running_pipeline,
    submit,
    until,
    wait_for,
    wait_for_pool,
)
from tests.sim import Sim

RUNS = "DEVLINE_TEST_FORK_RUNS"

# A chain of 4 levels x 3 files; two files fail once (retried), so the log has decisions.
FILES = [{"path": f"r{layer}/m{i}.py",
          "content": (f"from r{layer - 1}.m{i} import X{i}\n" if layer else "")
          + f"X{i} = {layer * 10 + i}\n",
          "simulate": {"fail_first": 1} if (layer, i) in ((0, 1), (2, 0)) else None}
         for layer in range(4) for i in range(3)]


def fork_executor(item: Any) -> str:
    """The fork's `python` executor: writes the plan's content and notes the run."""
    with open(os.environ[RUNS], "a") as f:
        f.write(json.dumps({"plan": item.plan_id, "task": item.task_id}) + "\n")
    return item.content if item.content is not None else f"# {item.path}\n"


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def cli(settings: Settings, *args: str) -> Done:
    """`devline ARGS` in this process (Typer's runner: no interpreter start-up to pay)."""
    from typer.testing import CliRunner

    from devline.cli.main import app

    result = CliRunner().invoke(app, list(args), env=child_env(settings))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Done(result.exit_code, result.stdout, result.stderr)


def runs(path: Path, plan_id: str) -> list[str]:
    if not path.exists():
        return []
    return [d["task"] for d in map(json.loads, path.read_text().splitlines())
            if d["plan"] == plan_id]


def test_replay_verify_fork_and_reset_a_plan_that_ran(topics: Settings, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    demo_runs, fork_runs = tmp_path / "demo.jsonl", tmp_path / "fork.jsonl"
    monkeypatch.setenv(RUNS, str(fork_runs))
    config = tmp_path / "executors.json"
    config.write_text(json.dumps({"demo": {"journal": str(demo_runs)},
                                  "python": {"entrypoint": "tests.test_replay_e2e:fork_executor"}}))
    settings = topics.updated(executor_config=config)
    files = [{k: v for k, v in f.items() if v is not None} for f in FILES]
    with running_pipeline(settings, workers=2, log=tmp_path / "run.log"):
        wait_for_pool(settings, 2)
        source = submit(settings, {"project": "rep", "name": "rep", "files": files})
        kind, _ = wait_for(settings, source, {"PlanCompleted", "PlanRejected"}, timeout=120)
        assert kind == "PlanCompleted"

        done = cli(settings, "replay", source, "--verify", "--json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["status"] == "done" and doc["done"] == len(FILES) and doc["retries"] == 2
        assert doc["verify"]["agree"] and doc["verify"]["checked"]["retry"] == 2

        # Reset refuses while the processor runs; the dry run says what it would do.
        refused = cli(settings, "reset", "--to-earliest")
        assert refused.returncode == 1 and "running" in refused.stderr
        dry = cli(settings, "reset", "--to-earliest", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"set offsets of group {settings.group('devline-streams')}" in dry.stdout
        assert f"delete topic {settings.topic(T.changelog('tasks'))}" in dry.stdout
        assert "would be refused" in dry.stderr

        # Fork at the midpoint with another executor: only what was not done runs.
        before = asyncio.run(plan_events(settings, source))
        mid = len(before) // 2
        forked = cli(settings, "fork", source, "--at", str(mid), "--executor", "python",
                     "--as", "rep-fork", "--wait", "--timeout", "120")
        assert forked.returncode == 0, forked.stderr + forked.stdout
        assert forked.stdout.strip().splitlines()[0] == "rep-fork"
        kept = int(forked.stderr.split(" file(s) kept")[0].rsplit(" ", 1)[1])
        assert 0 < kept < len(FILES)
        ran = runs(fork_runs, "rep-fork")
        assert sorted(ran) == sorted(set(ran)) and len(ran) == len(FILES) - kept
        assert runs(demo_runs, "rep-fork") == []  # kept files: no executor at all
        after = asyncio.run(plan_events(settings, source))
        assert [(e.event_type, e.value) for e in after] == \
            [(e.event_type, e.value) for e in before]  # the source is untouched
        fork_doc = json.loads(cli(settings, "replay", "rep-fork", "--verify", "--json").stdout)
        assert fork_doc["executor_runs"] == len(FILES) - kept and fork_doc["verify"]["agree"]
        assert fork_doc["cache_hits"] == kept
        accepted = [v for _, et, v in events(settings) if et == "PlanAccepted"
                    and v["plan_id"] == "rep-fork"]
        assert accepted[0]["options"]["fork.source"] == source

    # Stopped: the reset goes through; a restart rebuilds the state, accepting nothing twice.
    faust_dir = settings.data_dir / settings.topic_prefix / "faust"
    assert faust_dir.exists()
    reset = cli(settings, "reset", "--to-earliest", "--wait", "20")
    assert reset.returncode == 0, reset.stderr
    assert not faust_dir.exists()
    runs_before = (demo_runs.read_text(), fork_runs.read_text())
    decided = Counter(et for _, et, _ in events(settings))
    with running_pipeline(settings, workers=1, log=tmp_path / "run2.log"):
        until("the plans table rebuilt", lambda: rebuilt(settings, {source, "rep-fork"}),
              timeout=90)
    assert (demo_runs.read_text(), fork_runs.read_text()) == runs_before  # nothing ran again
    # Releases and completions are left to after the catch-up: none is decided again.
    again = Counter(et for _, et, _ in events(settings))
    for kind in ("TaskCompleted", "PlanCompleted", "TaskDispatched", "TaskRetryScheduled"):
        assert again[kind] == decided[kind], kind
    accepted_ids = [v["plan_id"] for _, et, v in events(settings) if et == "PlanAccepted"]
    assert sorted(accepted_ids) == sorted([source, "rep-fork"])


def rebuilt(settings: Settings, plan_ids: set[str]) -> bool:
    """Every plan done and reported in the plans table's changelog (created empty by the
    reset), in the plan's own partition: where a processor taking it over would read it."""
    latest: dict[str, Any] = {}
    for rec in sorted(raw_records(settings, T.changelog("plans"), idle=0.5),
                      key=lambda r: (r.partition, r.offset)):
        key = (rec.key or b"").decode(errors="replace").strip('"')
        if key in plan_ids and rec.partition == asyncio.run(plan_partition(settings, key)):
            latest[key] = json.loads(rec.value) if rec.value else None
    return all((latest.get(p) or {}).get("status") == "done"
               and (latest.get(p) or {}).get("reported") for p in plan_ids)


def test_verify_names_an_event_altered_in_a_copy_of_the_log(topics: Settings) -> None:
    """The processor's log of a plan with retries, a dead letter and a redrive (in-memory
    edge) copied into this prefix's topic with one decision altered by hand."""
    sim = Sim()
    sim.submit({"plan_id": "p9", "project": "sim", "name": "p9", "files": [
        {"path": "a.py", "content": "A = 1\n", "simulate": {"fail_first": 2}},
        {"path": "b.py", "content": "from a import A\nB = A\n"}]})
    asyncio.run(sim.run(lambda s: s.reported("p9")))
    codec = Codec.from_settings(topics)
    log = [(et, ev) for et, ev in sim.events() if ev["plan_id"] == "p9"]
    target = [i for i, (et, _) in enumerate(log) if et == "TaskRetryScheduled"][1]

    asyncio.run(copy_to(topics, log, None, codec))
    same = cli(topics, "replay", "p9", "--verify")
    assert same.returncode == 0 and "verify: agree" in same.stdout, same.stdout + same.stderr
    other = topics.updated(topic_prefix=topics.topic_prefix + "x.")
    asyncio.run(T.create_topics(other, tuple(s for s in T.CATALOGUE if s.name == T.EVENTS)))
    try:
        asyncio.run(copy_to(other, log, target, codec))
        bad = cli(other, "replay", "p9", "--verify")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert f"DIVERGES at seq {target + 1} " in bad.stdout
        assert "delay_ms" in bad.stdout
        upto = cli(other, "replay", "p9", "--verify", "--to", str(target), "--json")
        assert json.loads(upto.stdout)["verify"]["agree"]
    finally:
        from streams.topics import delete_prefixed_topics

        asyncio.run(delete_prefixed_topics(other))


async def copy_to(settings: Settings, log: list[tuple[str, dict[str, Any]]],
                  target: int | None, codec: Codec) -> None:
    """The plan's events into this prefix's devline.events, the `target`-th altered."""
    for i, (et, ev) in enumerate(log):
        if i == target:
            ev = {**ev, "delay_ms": ev["delay_ms"] + 1000, "due_at": ev["due_at"] + 1000}
        await send_raw(settings, settings.topic(T.EVENTS), b"p9", codec.encode(et, ev),
                       headers_for(et, ev))
