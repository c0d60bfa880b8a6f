"""Which plan files a real test failure should be fixed in (pure, no I/O).

Best evidence first: the frames of the failure's traceback, innermost first, that are plan
files and not tests (the code that raised, then its callers); else the plan's non-test files
the test executed, when coverage data is available; else the test file itself.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from agents.integration.discovery import is_test_file, normalize
from agents.integration.junit import TestOutcome

# pytest's frame locations ("calc/ops.py:2: AssertionError", "tests/t.py:7: in test_x") and
# Python's own ('  File "/abs/calc/ops.py", line 2, in add'). Both are unindented or
# indented by spaces only, so lines of source or of an "E   " message never match.
_PYTEST_FRAME = re.compile(r"^(?P<path>[^\s:]+\.[A-Za-z0-9]+):(?P<line>\d+):", re.M)
_NATIVE_FRAME = re.compile(r'^[ \t]*File "(?P<path>[^"\n]+)", line (?P<line>\d+)', re.M)


def attribute(outcome: TestOutcome, plan_files: Collection[str], *,
              covered: Collection[str] = ()) -> list[str]:
    """The plan files to fix for a failed `outcome`, best first (never empty)."""
    plan = {normalize(f) for f in plan_files}
    candidates = {f for f in plan if not is_test_file(f)}
    from_frames = _distinct(_match(p, candidates) for p in reversed(traceback_paths(outcome)))
    if from_frames:
        return from_frames
    from_coverage = sorted(_distinct(_match(p, candidates) for p in covered))
    if from_coverage:
        return from_coverage
    return [normalize(outcome.test_id.split("::", 1)[0])]


def traceback_paths(outcome: TestOutcome) -> list[str]:
    """The file of every frame in the outcome's traceback, outermost first."""
    text = outcome.traceback or outcome.output
    found = [(m.start(), m["path"]) for m in _PYTEST_FRAME.finditer(text)]
    found += [(m.start(), m["path"]) for m in _NATIVE_FRAME.finditer(text)]
    return [path for _, path in sorted(found)]


def _match(path: str, files: Collection[str]) -> str | None:
    """The plan file `path` names: equal, or the longest whose path it ends with.

    A frame's path is relative to the directory pytest ran in, or absolute; plan paths are
    relative to the plan's root, so a suffix on a '/' boundary identifies the file.
    """
    path = normalize(path)
    if path in files:
        return path
    ends = [f for f in files if path.endswith("/" + f)]
    return max(ends, key=len) if ends else None


def _distinct(paths: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(p for p in paths if p is not None))
