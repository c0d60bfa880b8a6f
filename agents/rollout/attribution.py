"""Which files a failed canary implicates: the ones that changed since the stable revision.

A canary's metrics say that the revision is worse, not where. The first cut, and the one a
person would make too: what differs from what was serving traffic fine. Each revision's
manifest (path -> content hash prefix) comes from its plan's verified files. When the
answer is no help (the stable revision's files unknown, nothing changed, or more changed
files than a fix loop should guess at) a person decides instead. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

HASH_PREFIX = 16      # hex digits of a file's sha256 kept in a manifest
FIX_MAX_FILES = 10    # plan option rollout.fix_max_files: above this, escalate instead


@dataclass(frozen=True)
class Attribution:
    paths: tuple[str, ...]  # files to fix; empty: escalate
    why: str


def implicated(canary: Mapping[str, str], stable: Mapping[str, str] | None,
               limit: int = FIX_MAX_FILES) -> Attribution:
    """The files of `canary` that are new or differ from `stable` (manifests)."""
    if not canary:
        return Attribution((), "the canary's files are not known")
    if not stable:
        return Attribution((), "the stable revision's files are not known, so no change "
                               "can be blamed")
    changed = tuple(sorted(p for p, h in canary.items() if stable.get(p) != h))
    if not changed:
        return Attribution((), "no file differs from the stable revision: the fault is "
                               "outside the code (configuration, data, infrastructure)")
    if len(changed) > limit:
        return Attribution((), f"{len(changed)} files differ from the stable revision, more "
                               f"than rollout.fix_max_files={limit}")
    return Attribution(changed, f"{len(changed)} file(s) differ from the stable revision")


_FIXED = re.compile(r"^(?P<base>.*)-fix(?P<n>\d+)$")


def fixed_revision(revision: str) -> str:
    """The name of a revision after its canary's fix: `v2` -> `v2-fix1` -> `v2-fix2`."""
    m = _FIXED.match(revision)
    if m is None:
        return f"{revision}-fix1"
    return f"{m['base']}-fix{int(m['n']) + 1}"
