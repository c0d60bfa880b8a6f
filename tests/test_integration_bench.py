"""scripts/bench_shards.py still runs: its help, and a tiny suite on two shards."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_shards.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_shards", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_shards", module)
    spec.loader.exec_module(module)
    return module


def test_help_names_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_bench().main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(option in out for option in ("--tests", "--workers", "--seed"))


def test_planted_durations_are_seeded_and_mostly_short() -> None:
    bench = load_bench()
    durations = bench.planted_durations(400, seed=3)
    assert durations == bench.planted_durations(400, seed=3)
    assert all(0.05 <= d <= 2.0 for d in durations)
    assert 0 < sum(d >= 1.0 for d in durations) < 0.1 * len(durations)


def test_a_tiny_run_prints_its_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    assert bench.main(["--tests", "4", "--workers", "2", "--keep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 workers, LPT" in out and "round-robin" in out and "speedup" in out
    assert len(list(tmp_path.glob("tests/test_sleep_*.py"))) == 1
