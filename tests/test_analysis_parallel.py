"""Scanning a big tree in forked processes gives the same analysis as one process."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agents.analysis import analyze_path, parallel
from agents.analysis.model import ScanResult


def _tree(root: Path, packages: int = 12, modules: int = 30) -> None:
    """A tree of over 512 KB: packages importing each other, JS importing JS, errors."""
    padding = "# " + "x" * 1500 + "\n"
    for p in range(packages):
        pkg = root / f"pkg{p}"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(f"from pkg{(p + 1) % packages} import m0\n")
        for m in range(modules):
            body = f"from . import m{(m + 1) % modules}\nimport json\n" + padding * 2
            if p == 3 and m == 7:
                body += "from .... import nowhere\n"  # beyond the top: an error
            (pkg / f"m{m}.py").write_text(body)
    web = root / "web"
    web.mkdir()
    for j in range(40):
        (web / f"w{j}.js").write_text(f"import x from './w{(j + 1) % 40}.js';\n"
                                      f"const r = require('react');\n" + "// pad\n" * 400)


def _comparable(root: Path, jobs: int) -> dict:
    data = analyze_path(root, jobs=jobs).to_json()
    data["stats"].pop("seconds")
    return data


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forking needs a POSIX system")
@pytest.mark.parametrize("jobs", [2, 3, 5])
def test_forked_scans_give_the_same_analysis(tmp_path: Path, jobs: int) -> None:
    _tree(tmp_path)
    one = _comparable(tmp_path, 1)
    assert one["stats"]["edges"] > 400 and one["stats"]["parse_errors"] == 1
    assert one["external"]["web/w0.js"] == ["react"]
    assert _comparable(tmp_path, jobs) == one


def test_split_balances_sizes_and_keeps_order() -> None:
    sizes = {"a": 10, "b": 50, "c": 30, "d": 20, "e": 40}
    shares = parallel.split(sizes, 2)
    assert sorted(p for share in shares for p in share) == sorted(sizes)
    loads = [sum(sizes[p] for p in share) for share in shares]
    assert abs(loads[0] - loads[1]) <= 10
    for share in shares:
        assert share == [p for p in sizes if p in share]  # the caller's order


def test_split_gives_less_to_the_share_with_fixed_work() -> None:
    sizes = {f"f{i}": 10 for i in range(10)}
    shares = parallel.split(sizes, 2, fixed=60)
    assert [len(share) for share in shares] == [8, 2]


def _found(edge: str) -> ScanResult:
    result = ScanResult()
    result.edges.add((edge, "x"))
    result.parsed = 1
    return result


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forking needs a POSIX system")
def test_children_results_are_merged_and_children_reaped() -> None:
    ran_here: list[str] = []

    def scan(name: str):
        def run() -> ScanResult:
            ran_here.append(f"{name}:{os.getpid()}")
            return _found(name)
        return run

    result = parallel.run([scan("a"), scan("b"), scan("c")])
    assert result.edges == {("a", "x"), ("b", "x"), ("c", "x")} and result.parsed == 3
    assert ran_here == [f"a:{os.getpid()}"]  # b and c ran in children
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child left behind


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forking needs a POSIX system")
def test_a_child_that_fails_has_its_share_scanned_here() -> None:
    parent = os.getpid()

    def flaky() -> ScanResult:
        if os.getpid() != parent:
            raise RuntimeError("the child breaks")
        return _found("flaky")

    result = parallel.run([lambda: _found("main"), flaky])
    assert result.edges == {("main", "x"), ("flaky", "x")}


def test_no_fork_while_other_threads_run() -> None:
    parent = os.getpid()
    pids: list[int] = []

    def scan() -> ScanResult:
        pids.append(os.getpid())
        return _found(str(len(pids)))

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        result = parallel.run([scan, scan])
    finally:
        stop.set()
        other.join()
    assert pids == [parent, parent] and len(result.edges) == 2
