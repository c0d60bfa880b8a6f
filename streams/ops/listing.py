"""Read the decisions on devline.ops back (for `devline ops decisions`)."""

from __future__ import annotations

from typing import Any

from devline.errors import DecodeError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import records


async def load_decisions(settings: Settings, plan_id: str | None = None,
                         idle_timeout: float = 1.5) -> list[dict[str, Any]]:
    """Every OpsDecision record on devline.ops (of `plan_id` only, if given), oldest first."""
    codec = Codec.from_settings(settings)
    found = []
    async for record in records(settings, T.OPS, idle_timeout=idle_timeout):
        try:
            event_type, value = codec.decode(record.value or b"")
        except DecodeError:
            continue
        if event_type != "OpsDecision":
            continue
        if plan_id is not None and value.get("plan_id") != plan_id:
            continue
        found.append(value)
    return sorted(found, key=lambda v: (v["at"], v["decision_id"]))
