"""A pytest plugin that keeps only the tests listed in the file named by $DEVLINE_SHARD_TESTS.

`run_shard` copies this file next to the JUnit report and loads it with `-p`, passing pytest
the test *files* rather than node ids: a node id whose module fails to import makes pytest
abort the whole run ("found no collectors"), whereas a file with a collection error is
reported as one error and, with --continue-on-collection-errors, the rest still runs.
Self-contained on purpose: it runs in the plan's interpreter, where devline is not installed.
An id selects itself, its parametrized cases ("id[...]") and, for a class or module, the
tests inside it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

ENV_VAR = "DEVLINE_SHARD_TESTS"


def selectors(node_id: str) -> set[str]:
    """The ids that select `node_id`: itself, its base id and its enclosing nodes."""
    parts = node_id.split("[", 1)[0].split("::")
    return {node_id} | {"::".join(parts[:k]) for k in range(1, len(parts) + 1)}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    listing = os.environ.get(ENV_VAR)
    if not listing:
        return
    wanted = set(Path(listing).read_text(encoding="utf-8").splitlines())
    keep = [item for item in items if selectors(item.nodeid) & wanted]
    dropped = [item for item in items if not selectors(item.nodeid) & wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
