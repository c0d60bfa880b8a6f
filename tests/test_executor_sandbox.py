"""Sandbox directories, path checks and safe result reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agents.executors.sandbox import (
    new_sandbox,
    read_output,
    resolve_inside,
    task_sandbox,
    write_output,
)
from devline.errors import ExecutorError, WorkspaceError


@pytest.mark.parametrize("path", [
    "", "/etc/passwd", "../x.py", "a/../../x.py", "a/..", ".", "./", "C:/x.py", "C:x.py",
    "a\\b.py", "nul\0byte.py", ".devline/task.json",
])
def test_unsafe_paths_are_rejected(tmp_path: Path, path: str) -> None:
    with pytest.raises(WorkspaceError):
        resolve_inside(tmp_path, path)


@pytest.mark.parametrize(("path", "expected"), [
    ("a.py", "a.py"), ("./src/a.py", "src/a.py"), ("src//pkg/a.py", "src/pkg/a.py"),
    ("weird name $(x) ;`y`.py", "weird name $(x) ;`y`.py"), ("..hidden", "..hidden"),
])
def test_safe_paths_resolve_inside(tmp_path: Path, path: str, expected: str) -> None:
    assert resolve_inside(tmp_path, path) == tmp_path.resolve() / expected


def test_a_symlinked_directory_cannot_lead_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "inner").mkdir(parents=True)
    (tmp_path / "root-sibling").mkdir()
    # A sibling whose name starts like the root: a string-prefix check would accept it.
    (root / "sib").symlink_to(tmp_path / "root-sibling")
    (root / "ok").symlink_to(root / "inner")
    with pytest.raises(WorkspaceError):
        resolve_inside(root, "sib/x.py")
    assert resolve_inside(root, "ok/x.py") == (root / "inner" / "x.py").resolve()


def test_read_output_accepts_a_regular_file_and_a_symlink_inside(tmp_path: Path) -> None:
    (tmp_path / "real.py").write_text("x = 1\n")
    (tmp_path / "link.py").symlink_to(tmp_path / "real.py")
    assert read_output(tmp_path, "real.py") == "x = 1\n"
    assert read_output(tmp_path, "link.py") == "x = 1\n"


@pytest.mark.parametrize(("make", "error_type"), [
    (lambda p: None, "no_output"),
    (lambda p: p.symlink_to("/etc/passwd"), "unsafe_output"),
    (lambda p: p.symlink_to(p.parent / "missing"), "no_output"),
    (lambda p: p.mkdir(), "unsafe_output"),
    (lambda p: os.mkfifo(p), "unsafe_output"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00binary"), "invalid_output"),
    (lambda p: p.write_text("y" * 101), "output_too_large"),
])
def test_read_output_rejects(tmp_path: Path, make, error_type: str) -> None:  # type: ignore[no-untyped-def]
    make(tmp_path / "out.txt")
    with pytest.raises(ExecutorError) as caught:
        read_output(tmp_path, "out.txt", max_bytes=100)
    assert caught.value.error_type == error_type and not caught.value.retryable


def test_write_output_never_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("keep")
    root = tmp_path / "root"
    root.mkdir()
    (root / "out.txt").symlink_to(target)
    with pytest.raises((WorkspaceError, OSError)):
        write_output(root, "out.txt", "overwritten")
    assert target.read_text() == "keep"
    assert write_output(root, "new/dir/f.py", "ok").read_text() == "ok"


def test_sandboxes_are_fresh_private_and_removed(tmp_path: Path) -> None:
    with task_sandbox("plan/task:1", base=tmp_path) as one, task_sandbox("x", base=tmp_path) as two:
        assert one != two and one.parent == tmp_path.resolve()
        assert "/" not in one.name[len("devline-"):] and ":" not in one.name
        assert stat.S_IMODE(one.stat().st_mode) == 0o700
        locked = one / "locked"
        locked.mkdir()
        (locked / "f").write_text("x")
        locked.chmod(0o500)  # a command that made its files read-only
    assert not one.exists() and not two.exists()
    assert new_sandbox(base=tmp_path).name.startswith("devline-")
