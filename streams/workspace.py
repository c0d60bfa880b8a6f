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


def write_output(workspace: Path, project: str, path: str, content: str) -> Path:
    """Write atomically (temp file + rename) so readers never see half a file."""
    target = target_path(workspace, project, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, target)
    return target
