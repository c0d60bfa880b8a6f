"""Materialise finished files under the workspace, never outside it."""

from __future__ import annotations

import os
from pathlib import Path

from devline.errors import WorkspaceError


def target_path(workspace: Path, project: str, path: str) -> Path:
    """`workspace/project/path`, resolved; raises if it would land outside the workspace."""
    root = workspace.resolve()
    target = (root / project / path).resolve()
    try:
        target.relative_to(root)
    except ValueError:
        raise WorkspaceError(f"{project}/{path} escapes the workspace {root}") from None
    return target


def write_atomically(target: Path, data: bytes) -> None:
    """Write via a temp file and a rename, so readers never see half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
