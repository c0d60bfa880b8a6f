"""A plan's state as views over the `plans` and `tasks` tables (keys `plan_id/task_id`)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from agents.scheduling.fold import PlanState
from streams.edge.ports import Table


class TaskView(MutableMapping[str, Any]):
    """One plan's tasks inside the `tasks` table. Reads return copies; writes go through."""

    def __init__(self, table: Table, plan_id: str) -> None:
        self._table = table
        self._prefix = f"{plan_id}/"

    def __getitem__(self, task_id: str) -> Any:
        value = self._table.get(self._prefix + task_id)
        if value is None:
            raise KeyError(task_id)
        return dict(value)

    def __setitem__(self, task_id: str, value: Any) -> None:
        self._table[self._prefix + task_id] = value

    def __delitem__(self, task_id: str) -> None:
        del self._table[self._prefix + task_id]

    def __iter__(self) -> Iterator[str]:
        n = len(self._prefix)
        return (k[n:] for k in list(self._table.keys()) if k.startswith(self._prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def plan_state(plans: Table, tasks: Table, plan_id: str) -> PlanState:
    """The plan as the tables hold it: a copy of the header, a live view of the tasks."""
    header = plans.get(plan_id)
    return PlanState(dict(header) if header else {}, TaskView(tasks, plan_id))


def save_header(plans: Table, state: PlanState, before: dict[str, Any] | None) -> None:
    """Write the header back if the fold changed it (delete it if the fold cleared it)."""
    if state.header and state.header != before:
        plans[state.header["plan_id"]] = dict(state.header)
    elif before and not state.header:
        del plans[before["plan_id"]]


def split_key(key: str) -> tuple[str, str]:
    plan_id, _, task_id = key.partition("/")
    return plan_id, task_id
