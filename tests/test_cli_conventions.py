"""CLI conventions without a broker: help everywhere, --version, what `--help` and
`analyze` import, tail's choices and formats, the status table, start-up log noise."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from devline.cli.lognoise import StartupNoise
from devline.cli.main import VALUE_OPTIONS, app, command_name
from devline.cli.plans import status_lines
from devline.cli.tail import Filter, Format, Start, parse_time, pretty_line, render, start_offset
from devline.envvars import env_name
from devline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_765_000_000_000  # a fixed "now" in epoch ms


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*path, name))


COMMANDS = list(walk(get_command(app)))


def test_the_walk_reaches_every_command() -> None:
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"", "submit", "tail", "status", "events", "run", "topics create", "dlq redrive",
            "rollout promote", "ops decisions", "analyze", "gc", "ui"} <= names
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "-")
def test_every_option_is_described_and_no_flag_shows_a_bool_metavar(path: tuple[str, ...]
                                                                   ) -> None:
    command = dict(COMMANDS)[path]
    undescribed = [p.name for p in command.params
                   if p.param_type_name == "option" and not (p.help or "").strip()]
    assert undescribed == [], f"options without help in `devline {' '.join(path)}`"
    assert (command.help or command.short_help or "").strip(), "a command without help"
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"},
                               prog_name="devline")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "Usage: devline" in result.output
    # Placeholders say what a value is (N, SECONDS, HOST:PORT), not its Python type.
    typed = re.findall(r"<(?:str|int|int range|float|float range|path|file)>", result.output)
    assert typed == [], f"type placeholders in `devline {' '.join(path)} --help`"


def test_env_var_names_match_the_settings_model() -> None:
    from devline.settings import Settings

    for field in ("bootstrap", "log_level", "registry_url"):
        assert env_name(field) == Settings.env_name(field)


def test_version_comes_from_the_package_metadata() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"devline {version('devline')}"


def test_an_unknown_log_level_is_refused_by_name() -> None:
    result = CliRunner().invoke(app, ["--log-level", "LOUD", "status"])
    assert result.exit_code == 2
    assert "LOUD" in result.output and "DEBUG" in result.output


def _imported(*argv: str, cwd: Path = ROOT) -> tuple[set[str], str]:
    """Top-level modules a fresh `python -m devline ARGV` imported, and its stdout."""
    probe = ("import runpy, sys\n"
             f"sys.argv = ['devline', *{list(argv)!r}]\n"
             "try:\n"
             "    runpy.run_module('devline', run_name='__main__')\n"
             "except SystemExit:\n"
             "    pass\n"
             "sys.stderr.write('MODULES ' + ' '.join(sorted({m.split('.')[0] for m in "
             "sys.modules})))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=cwd, timeout=60)
    line = next(x for x in done.stderr.splitlines() if x.startswith("MODULES "))
    return set(line.split()[1:]), done.stdout


def test_help_imports_no_kafka_client_faust_or_settings_model() -> None:
    modules, out = _imported("--help")
    assert "Usage: devline" in out
    assert not modules & {"faust", "mode", "aiokafka", "confluent_kafka", "networkx",
                          "pydantic", "fastavro", "aiohttp", "streams", "agents"}


def test_analyze_imports_only_the_analyzer(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from pkg import a\n")
    (tmp_path / "pkg" / "a.py").write_text("import json\n")
    modules, out = _imported("analyze", str(tmp_path), "--json")
    assert json.loads(out)["edges"] == [["pkg/__init__.py", "pkg/a.py"]]
    assert not modules & {"faust", "mode", "aiokafka", "networkx", "streams", "yaml",
                          "pydantic"}


# -- tail: which records, from where, printed how -----------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("10m", NOW - 600_000), ("2h", NOW - 7_200_000), ("1d", NOW - 86_400_000),
    ("90s", NOW - 90_000), ("1.5h", NOW - 5_400_000), ("250ms", NOW - 250),
    ("1765000000123", 1_765_000_000_123),
    ("2025-12-06T05:46:40Z", 1_765_000_000_000),
    ("2025-12-06T05:46:40", 1_765_000_000_000),  # no zone: UTC
    ("2025-12-06T06:46:40+01:00", 1_765_000_000_000),
])
def test_times_are_relative_iso_or_epoch_ms(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "10 parsecs", "-5m", ""])
def test_a_bad_time_is_refused_naming_the_forms(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--until .*ISO 8601"):
        parse_time(text, NOW, option="--until")


@pytest.mark.parametrize(("text", "begin", "end", "at"), [
    ("beginning", 5, 20, 5), ("earliest", 5, 20, 5), ("end", 5, 20, 20), ("latest", 0, 7, 7),
    ("12", 5, 20, 12), ("2", 5, 20, 5), ("99", 5, 20, 20),  # clamped to what is there
    ("-3", 5, 20, 17), ("-30", 5, 20, 5),
])
def test_start_offsets_follow_kcat(text: str, begin: int, end: int, at: int) -> None:
    assert start_offset(Start.parse(text), begin, end) == at


def test_a_time_start_uses_the_broker_answer_else_the_end() -> None:
    assert start_offset(Start("time"), 0, 50, 42) == 42
    assert start_offset(Start("time"), 0, 50, None) == 50


@pytest.mark.parametrize("text", ["first", "+3", "1.5", "--2"])
def test_a_bad_offset_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--offset"):
        Start.parse(text)


def test_filters_combine() -> None:
    f = Filter(keys=frozenset({"p1"}), types=frozenset({"TaskCompleted", "PlanCompleted"}),
               since_ms=100, until_ms=200)
    assert f.wants("p1", "TaskCompleted", 150)
    assert f.wants("p1", "PlanCompleted", 100) and f.wants("p1", "PlanCompleted", 200)
    assert not f.wants("p2", "TaskCompleted", 150)
    assert not f.wants("p1", "TaskFailed", 150)
    assert not f.wants("p1", "TaskCompleted", 99) and not f.wants("p1", "TaskCompleted", 201)
    assert Filter().wants(None, None, 0)


VIEW = {"topic": "devline.events", "partition": 3, "offset": 42, "timestamp": NOW,
        "key": "p1", "headers": {"event-type": "TaskCompleted"}, "type": "TaskCompleted",
        "value": {"plan_id": "p1", "task_id": "a.py"}}


def test_formats() -> None:
    assert json.loads(render(Format.json, VIEW, b"x")) == VIEW
    assert render(Format.raw, None, b"\x00avro") == b"\x00avro\n"
    line = render(Format.pretty, VIEW, b"x").decode()
    assert line == ('2025-12-06T05:46:40.000Z  devline.events[3]@42  p1  TaskCompleted  '
                    '{"plan_id":"p1","task_id":"a.py"}\n')
    bad = {**VIEW, "key": None, "type": None, "error": "not Avro"}
    del bad["value"]
    assert pretty_line(bad).endswith("  -  ?  undecodable: not Avro")


def test_tail_refuses_conflicting_starts_and_bad_times_before_connecting() -> None:
    runner = CliRunner()
    both = runner.invoke(app, ["--bootstrap", "127.0.0.1:9", "tail", "devline.events",
                               "--offset", "5", "--from-beginning"])
    assert both.exit_code == 2 and "--offset goes alone" in both.output
    backwards = runner.invoke(app, ["--bootstrap", "127.0.0.1:9", "tail", "devline.events",
                                    "--since", "1h", "--until", "2h"])
    assert backwards.exit_code == 2 and "--until is before --since" in backwards.output


# -- status ------------------------------------------------------------------------------
def _summary(plan_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"plan_id": plan_id, "name": "calculator with a long name that must fold",
            "status": status, "files": 9, "done": 9 if status == "done" else 0,
            "cache_hits": 0, "tasks": {"verified": 9} if status == "done" else {},
            "qa": {"checks": 21, "skipped": 0, "failed": 1, "fixes": 1}, "reason": None,
            "retired_at": None, **extra}


def test_status_has_a_header_shows_rejections_and_never_wraps_ids() -> None:
    long_id = "release-2026-12-05.calc:candidate-7"
    none = {"checks": 0, "skipped": 0, "failed": 0, "fixes": 0}
    rows = [_summary("dab4c4219f6b", "done"),
            _summary("9c20a57317e8", "running", tasks={"running": 2, "ready": 1,
                                                        "waiting": 5, "verified": 1}),
            _summary(long_id, "rejected", files=0, tasks={}, qa=none,
                     reason="dependency cycle: calc/a.py -> calc/b.py -> calc/c.py -> "
                            "calc/d.py -> calc/a.py, and more text to wrap the line")]
    lines = status_lines(rows, width=80)
    assert lines[0].split()[:5] == ["PLAN", "STATUS", "FILES", "QA", "(checks/failed/fixes)"]
    assert max(len(line) for line in lines) <= 80
    for plan_id in ("dab4c4219f6b", "9c20a57317e8", long_id):  # whole, on one line
        assert sum(plan_id in line for line in lines) == 1
    at = next(i for i, line in enumerate(lines) if line.startswith(long_id))
    assert lines[at].split()[1:3] == ["rejected", "0/0"]
    assert lines[at + 1].startswith("  rejected: dependency cycle: calc/a.py -> calc/b.py")
    assert lines[at + 2].startswith("    ") and lines[at + 2].strip().endswith("line")
    at = next(i for i, line in enumerate(lines) if "9c20a57317e8" in line)
    detail = " ".join(" ".join(lines[at + 1:at + 3]).split())
    assert detail.endswith("; ready 1, running 2, verified 1, waiting 5")
    assert "21/1/1" in lines[1]


# -- start-up log noise ------------------------------------------------------------------
def _record(name: str, msg: str, arg: Any, created: float, level: int = logging.ERROR
            ) -> logging.LogRecord:
    record = logging.LogRecord(name, level, "x.py", 1, msg, (arg,), None)
    record.created = created
    return record


def test_transient_startup_errors_are_debug_lines_then_errors_again() -> None:
    noise = StartupNoise(grace_s=60, started=1000.0)
    retriable = SimpleNamespace(retriable=True)
    coordinator = ("aiokafka.consumer.group_coordinator", "Group Coordinator Request failed: %s")
    early = _record(*coordinator, retriable, created=1010.0)
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        assert noise.filter(early) is False  # hidden at INFO
        root.setLevel(logging.DEBUG)
        again = _record(*coordinator, retriable, created=1010.0)
        assert noise.filter(again) is True and again.levelname == "DEBUG"
    finally:
        root.setLevel(level)
    late = _record(*coordinator, retriable, created=1100.0)
    assert noise.filter(late) is True and late.levelname == "ERROR"
    fatal = _record(*coordinator, SimpleNamespace(retriable=False), created=1010.0)
    assert noise.filter(fatal) is True and fatal.levelname == "ERROR"
    other = _record("aiokafka.consumer.group_coordinator", "Heartbeat failed: %r", retriable,
                    created=1010.0)
    assert noise.filter(other) is True and other.levelname == "ERROR"
    topic = _record("aiokafka.cluster", "Topic %s not found in cluster metadata", "t.x",
                    created=1001.0)
    assert noise.filter(topic) is False



@pytest.mark.parametrize(("argv", "name"), [
    (["analyze", "x"], "analyze"), (["--bootstrap", "h:1", "status"], "status"),
    (["--log-level=DEBUG", "-V"], None), (["--topic-prefix", "analyze", "tail", "t"], "tail"),
    (["--help"], None), ([], None), (["--", "run"], "run"),
])
def test_the_command_is_found_after_the_global_options(argv: list[str], name: str | None
                                                       ) -> None:
    assert command_name(argv) == name


def test_every_global_option_with_a_value_is_skipped() -> None:
    group = get_command(app)
    takes_value = {o for p in group.params if p.param_type_name == "option"
                   and not getattr(p, "is_flag", False) for o in p.opts}
    assert takes_value == VALUE_OPTIONS


def test_the_store_line_per_opened_partition_is_a_debug_line() -> None:
    noise = StartupNoise(grace_s=60, started=1000.0)
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        opened = _record("faust.stores.rocksdb", "opening partition 3 for gen id 1 app id 1",
                         None, created=5000.0, level=logging.INFO)
        assert noise.filter(opened) is False and opened.levelname == "DEBUG"
        warning = _record("faust.stores.rocksdb", "opening partition 3 failed", None,
                          created=5000.0, level=logging.WARNING)
        assert noise.filter(warning) is True and warning.levelname == "WARNING"
        ours = _record("devline.scheduler", "opening partition 3", None, created=5000.0,
                       level=logging.INFO)
        assert noise.filter(ours) is True and ours.levelname == "INFO"
    finally:
        root.setLevel(level)


@pytest.mark.parametrize(("args", "shown"), [
    ([], "--bootstrap HOST:PORT"), (["tail"], "--count N"), (["tail"], "--idle SECONDS"),
    (["run"], "--workspace DIR"), (["run"], "--scale-target NUMBER"),
    (["demo"], "--plan FILE"), (["observe"], "--tls-cert FILE"),
    (["replay"], "--to SEQ"), (["tail"], "--format <json|pretty|raw>"),
    (["submit"], "Usage: devline submit [OPTIONS] PLAN\n"),
    (["analyze"], "Usage: devline analyze [OPTIONS] PATH\n"),
])
def test_placeholders_say_what_a_value_is(args: list[str], shown: str) -> None:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "120"},
                                prog_name="devline")
    assert shown in result.output
