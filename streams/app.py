"""The Faust app: topics, tables and the stream agents that wire the role logic to them."""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import faust

from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.emit import Emitter

log = logging.getLogger("devline.streams")


class TaskView(MutableMapping[str, dict[str, Any]]):
    """One plan's tasks inside the `tasks` table (keys `plan_id/task_id`)."""

    def __init__(self, table: Any, plan_id: str) -> None:
        self._table = table
        self._prefix = f"{plan_id}/"

    def __getitem__(self, task_id: str) -> dict[str, Any]:
        value = self._table.get(self._prefix + task_id)
        if value is None:
            raise KeyError(task_id)
        return dict(value)

    def __setitem__(self, task_id: str, value: dict[str, Any]) -> None:
        self._table[self._prefix + task_id] = value

    def __delitem__(self, task_id: str) -> None:
        del self._table[self._prefix + task_id]

    def __iter__(self) -> Iterator[str]:
        n = len(self._prefix)
        return (k[n:] for k in list(self._table.keys()) if k.startswith(self._prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def broker_url(settings: Settings) -> str:
    return ";".join(f"kafka://{hp.strip()}" for hp in settings.bootstrap.split(","))


def credentials(settings: Settings) -> Any:
    if settings.sasl_mechanism:
        import ssl

        ctx = ssl.create_default_context(cafile=settings.ssl_cafile) if "SSL" in \
            settings.security_protocol else None
        return faust.SASLCredentials(
            username=settings.sasl_username or "",
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else "",
            mechanism=settings.sasl_mechanism, ssl_context=ctx)
    if settings.security_protocol == "SSL":
        import ssl

        return faust.SSLCredentials(ssl.create_default_context(cafile=settings.ssl_cafile))
    return None


class Pipeline:
    """Builds the app for one settings object; `streams.scheduling` registers the agents."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = Codec.from_settings(settings)
        datadir = settings.data_dir / (settings.topic_prefix or "default")
        datadir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            settings.group("devline-streams"),
            broker=broker_url(settings),
            broker_credentials=credentials(settings),
            store="memory://",
            topic_partitions=settings.event_partitions,
            topic_replication_factor=settings.replication,
            web_enabled=False,
            consumer_auto_offset_reset="earliest",
            datadir=str(datadir / "faust"),
            producer_linger=0.0,
            stream_wait_empty=False,
            broker_commit_every=100,
            broker_commit_interval=1.0,
            # A crashed processor's partitions move to its replacement after this long.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=2.0,
        )
        raw: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw",
                                   value_serializer="raw")
        self.plans_topic = self.app.topic(settings.topic(T.PLANS), **raw)
        self.events_topic = self.app.topic(settings.topic(T.EVENTS), **raw)
        self.workers_topic = self.app.topic(settings.topic(T.WORKERS), **raw)
        table: dict[str, Any] = dict(default=None, partitions=settings.event_partitions,
                                     key_type=str)
        self.plans = self.app.Table("plans", **table)
        self.tasks = self.app.Table("tasks", **table)
        self.cache = self.app.Table("cache", **table)
        self.artifacts = self.app.Table("artifacts", **table)
        # Breakers are global, not per plan: key-hash partitioning keeps one home per key.
        self.breakers = self.app.Table("breakers", use_partitioner=True, **table)
        self.emit = Emitter(settings, self.codec, self._send)

    async def _send(self, topic: str, *, key: bytes | None, value: bytes | None,
                    partition: int | None, headers: list[tuple[str, bytes]]) -> Any:
        """Queue a record; returns the delivery future (await it to know the broker has it)."""
        return await self.app.producer.send(topic, key, value, partition, None, headers)

    def task_view(self, plan_id: str) -> TaskView:
        return TaskView(self.tasks, plan_id)


def build(settings: Settings) -> Pipeline:
    """The pipeline with every stream agent registered."""
    from streams.planning import register_planner
    from streams.scheduling import register_scheduler

    pipeline = Pipeline(settings)
    register_planner(pipeline)
    register_scheduler(pipeline)
    return pipeline
