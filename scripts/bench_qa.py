#!/usr/bin/env python3
"""Per-file QA overhead: the checker chain on one written file, p50/p95 over N runs.

Side by side in one run: the `syntax`, `default` and `strict` chains on a 50-line module
and on a test file with 4 tests (its module beside it in the sandbox), against the floor
any checker pays: one bare `ruff check` process and one `python -c pass` process.

    .venv/bin/python scripts/bench_qa.py --runs 30
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.qa import ToolLocator, check_file

MODULE = '''"""Inventory helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Item:
    name: str
    count: int = 0
    tags: list[str] = field(default_factory=list)

    def add(self, n: int) -> None:
        if n < 0:
            raise ValueError("negative")
        self.count += n


@dataclass
class Inventory:
    items: dict[str, Item] = field(default_factory=dict)

    def get(self, name: str) -> Item:
        if name not in self.items:
            self.items[name] = Item(name)
        return self.items[name]

    def total(self) -> int:
        return sum(i.count for i in self.items.values())

    def tagged(self, tag: str) -> list[Item]:
        return [i for i in self.items.values() if tag in i.tags]

    def save(self, path: Path) -> None:
        data = {k: {"count": v.count, "tags": v.tags} for k, v in self.items.items()}
        path.write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, path: Path) -> Inventory:
        inv = cls()
        for name, raw in json.loads(path.read_text()).items():
            inv.items[name] = Item(name, raw["count"], list(raw["tags"]))
        return inv

    def names(self) -> list[str]:
        """Item names in order."""
        return sorted(self.items)
'''
TESTS = '''from pkg.inventory import Inventory


def test_empty():
    assert Inventory().total() == 0


def test_add():
    inv = Inventory()
    inv.get("a").add(2)
    assert inv.total() == 2


def test_tags():
    inv = Inventory()
    inv.get("a").tags.append("x")
    assert [i.name for i in inv.tagged("x")] == ["a"]


def test_roundtrip(tmp_path):
    inv = Inventory()
    inv.get("b").add(3)
    inv.save(tmp_path / "i.json")
    assert Inventory.load(tmp_path / "i.json").total() == 3


def test_negative():
    import pytest
    with pytest.raises(ValueError):
        Inventory().get("c").add(-1)
'''


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def chain_times(path: str, files: dict[str, str], chain: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        verdict = await check_file(path, files, chain=chain)
        assert verdict.passed, [(c.name, c.status, c.output[:200]) for c in verdict.checks]
        out.append(verdict.duration_ms)
    return out


def process_times(argv: list[str], runs: int, cwd: Path) -> list[float]:
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(argv, cwd=cwd, capture_output=True, check=False)
        out.append((time.perf_counter() - began) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="runs per case (default 30)")
    args = ap.parse_args()
    module = {"pkg/__init__.py": "", "pkg/inventory.py": MODULE}
    tests = {**module, "tests/test_inventory.py": TESTS}
    rows: list[tuple[str, list[float]]] = []
    for chain in ("syntax", "default", "strict"):
        rows.append((f"{chain} chain, 50-line module",
                     asyncio.run(chain_times("pkg/inventory.py", module, chain, args.runs))))
    for chain in ("default", "strict"):
        rows.append((f"{chain} chain, test file (4 tests)",
                     asyncio.run(chain_times("tests/test_inventory.py", tests, chain,
                                             args.runs))))
    work = Path(tempfile.mkdtemp(prefix="devline-qa-bench-"))
    (work / "m.py").write_text(MODULE)
    ruff = ToolLocator.default().find("ruff")
    if ruff is not None:
        rows.append(("baseline: bare `ruff check` process",
                     process_times([str(ruff), "check", "--no-cache", "--isolated", "m.py"],
                                   args.runs, work)))
    rows.append(("baseline: `python -c pass` process",
                 process_times([sys.executable, "-c", "pass"], args.runs, work)))
    shutil.rmtree(work, ignore_errors=True)
    print(f"{'case':42} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    for name, values in rows:
        print(f"{name:42} {pct(values, 0.5):8.1f} {pct(values, 0.95):8.1f} "
              f"{statistics.fmean(values):8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
