"""Per-task sandbox directories, and safe paths and file reads inside them.

What the sandbox guarantees, and what it does not:

* every task gets a fresh private directory (mode 0700) that is removed afterwards;
* a task path is accepted only if it is relative, free of `..`, and still inside the sandbox
  after `Path.resolve()` (checked with `relative_to`, never with string prefixes);
* a result is read only from a regular file inside the sandbox, size-limited, without
  following a final symlink — a symlink (or symlinked directory) pointing outside is rejected.

It is *not* an OS-level jail: a command run in it is an ordinary process of the same user
and can read or write anything that user can. Use a container, a separate user or a
seccomp/landlock wrapper around the command when the command itself is not trusted.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from devline.errors import ExecutorError, WorkspaceError

#: Directory inside a sandbox for devline's own files (task file, TMPDIR). Task paths may
#: not point into it.
RESERVED_DIR = ".devline"
DEFAULT_MAX_OUTPUT_BYTES = 4 * 1024 * 1024

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def new_sandbox(task_id: str = "", base: Path | None = None) -> Path:
    """Create a fresh private directory for one task and return its resolved path."""
    label = _UNSAFE_NAME.sub("_", task_id)[:40]
    prefix = f"devline-{label}-" if label else "devline-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base)).resolve()


def remove_sandbox(path: Path) -> None:
    """Delete a sandbox, including files a command made read-only."""

    def _unlock_and_retry(func: Any, target: str, _exc_info: Any) -> None:
        parent = os.path.dirname(target)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if not os.path.islink(target) and os.path.isdir(target):
                os.chmod(target, stat.S_IRWXU)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=_unlock_and_retry)


@contextmanager
def task_sandbox(task_id: str = "", base: Path | None = None) -> Iterator[Path]:
    """A fresh sandbox for the duration of the block."""
    path = new_sandbox(task_id, base)
    try:
        yield path
    finally:
        remove_sandbox(path)


def check_relative(relpath: str) -> PurePosixPath:
    """`relpath` as a relative POSIX path, or `WorkspaceError` if it could leave its root."""
    if not relpath or "\0" in relpath:
        raise WorkspaceError(f"invalid path {relpath!r}: empty or contains NUL", field="path")
    if "\\" in relpath or PureWindowsPath(relpath).drive:
        raise WorkspaceError(f"invalid path {relpath!r}: use '/' separators, no drive",
                             field="path")
    path = PurePosixPath(relpath)
    if path.is_absolute():
        raise WorkspaceError(f"invalid path {relpath!r}: absolute", field="path")
    if ".." in path.parts:
        raise WorkspaceError(f"invalid path {relpath!r}: contains '..'", field="path")
    if not path.parts:
        raise WorkspaceError(f"invalid path {relpath!r}: names no file", field="path")
    if path.parts[0] == RESERVED_DIR:
        raise WorkspaceError(f"invalid path {relpath!r}: {RESERVED_DIR}/ is reserved",
                             field="path")
    return path


def resolve_inside(root: Path, relpath: str) -> Path:
    """The resolved location of `relpath` under `root`; `WorkspaceError` if it escapes."""
    rel = check_relative(relpath)
    base = root.resolve()
    target = (base / rel).resolve()
    try:
        target.relative_to(base)
    except ValueError:
        raise WorkspaceError(f"path {relpath!r} resolves outside the sandbox",
                             field="path") from None
    if target == base:
        raise WorkspaceError(f"path {relpath!r} names the sandbox itself", field="path")
    return target


def read_output(root: Path, relpath: str, max_bytes: int = DEFAULT_MAX_OUTPUT_BYTES) -> str:
    """Read the UTF-8 file a task left at `relpath` in `root`, or raise `ExecutorError`.

    None of these failures is retryable: the command ran and said it succeeded, so a missing,
    unsafe, oversized or binary result is a bug in the command or its wrapper, which should
    exit with a retryable code (75) when it wants another attempt.
    """
    try:
        target = resolve_inside(root, relpath)
    except WorkspaceError as exc:
        raise ExecutorError(f"unsafe result: {exc}", retryable=False,
                            error_type="unsafe_output") from exc
    # O_NOFOLLOW: the file may have become a symlink since resolve(); O_NONBLOCK: a FIFO at
    # the path must not hang us (it is then rejected as not a regular file).
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags)
    except FileNotFoundError:
        raise ExecutorError(f"the command left no file at {relpath!r}", retryable=False,
                            error_type="no_output") from None
    except OSError as exc:
        raise ExecutorError(f"cannot read result {relpath!r}: {exc.strerror}", retryable=False,
                            error_type="unsafe_output") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ExecutorError(f"result {relpath!r} is not a regular file", retryable=False,
                            error_type="unsafe_output")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ExecutorError(f"result {relpath!r} is larger than {max_bytes} bytes",
                            retryable=False, error_type="output_too_large")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExecutorError(f"result {relpath!r} is not UTF-8 text", retryable=False,
                            error_type="invalid_output") from exc


def write_output(root: Path, relpath: str, content: str) -> Path:
    """Write `content` to `relpath` inside `root` (never through a symlink) and return it."""
    target = resolve_inside(root, relpath)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Re-check after mkdir: a parent that existed could have been a symlink.
    target = resolve_inside(root, relpath)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(target, flags, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content.encode("utf-8"))
    return target
