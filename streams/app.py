"""The Faust app: topics, tables and the stream agents that wire the role logic to them."""

from __future__ import annotations

import logging
from typing import Any, cast

import faust
from faust.tables import TableManager

from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.consumer import FromStartTransport
from streams.edge.ports import Ports
from streams.edge.state import OneLookupTable, table_store
from streams.emit import Emitter
from streams.producing import FaustProducer
from streams.stateguard import stores_dir

log = logging.getLogger("devline.streams")

METADATA_AGE_MS = 5000


def broker_url(settings: Settings) -> str:
    return ";".join(f"kafka://{hp.strip()}" for hp in settings.bootstrap.split(","))


def credentials(settings: Settings) -> Any:
    """Faust's broker credentials from the same settings (and TLS context) as every other
    client: the CA file or the system trust store, the client certificate for mTLS."""
    if settings.sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.sasl_username or "",
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else "",
            mechanism=settings.sasl_mechanism, ssl_context=settings.ssl_context())
    if settings.uses_tls:
        return faust.SSLCredentials(settings.ssl_context())
    return None


class EagerTableManager(TableManager):
    """Faust's table manager sleeps a second at start in case tables are still being
    declared; ours are all declared before the app starts, and a restarted processor's
    partitions wait for it (failover time), so it starts at once."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class Pipeline:
    """Builds the app for one settings object; `streams.scheduling` registers the agents."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = Codec.from_settings(settings)
        # One directory per processor instance: RocksDB locks its files, and processors
        # of one machine (devline run --processors N) must not share them.
        datadir = stores_dir(settings) / (settings.instance_id or "default")
        datadir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            settings.group("devline-streams"),
            broker=broker_url(settings),
            broker_credentials=credentials(settings),
            store=table_store(settings.table_store),
            topic_partitions=settings.event_partitions,
            topic_replication_factor=settings.replication,
            web_enabled=False,
            consumer_auto_offset_reset="earliest",
            datadir=str(datadir),
            # Records of a batch's fold gathered into few requests: at 10 ms, 16 slots per
            # worker ran 253 tasks/s against 190 with none (the broker's CPU per task
            # 1.75 -> 0.6 ms). Not much more: the fold waits for its batch's sends.
            producer_linger=settings.processor_linger_ms / 1000,
            stream_wait_empty=False,
            broker_commit_every=100,
            broker_commit_interval=1.0,
            # A crashed processor's partitions move to another after this long (the broker's
            # minimum): the plans it folded wait for that. Faust heartbeats from its own
            # consumer thread, so a busy event loop does not cost the membership.
            broker_session_timeout=6.0,
            broker_heartbeat_interval=1.5,
            # Static membership: a restarted processor with the same id takes its partitions
            # back at once (no wait for the session timeout, no rebalance of the others).
            consumer_group_instance_id=settings.instance_id,
            # Faust's producer keeps aiokafka's 1 MB default unless told.
            producer_max_request_size=settings.max_message_bytes,
            TableManager=EagerTableManager,
            Table=OneLookupTable,
            # A consumer that joined before a new topic's metadata existed owns none of its
            # partitions until the next refresh: 5 s, not aiokafka's 5 minutes.
            consumer_metadata_max_age_ms=METADATA_AGE_MS,
            producer_metadata_max_age_ms=METADATA_AGE_MS,
        )
        # Partitions the group never committed are read from their first record.
        self.app.transport = FromStartTransport(self.app.conf.broker_consumer, self.app)
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
        # The planner's memory of plan ids it decided on (idempotent planning).
        self.submissions = self.app.Table("submissions", **table)
        self.emit = Emitter(settings, self.codec, self._send, urge=self._urge)
        self.store = settings.artifact_store()
        tables: Any = (self.plans, self.tasks, self.cache)  # Table protocol
        self.ports = Ports(settings, self.codec, self.emit, self.store, *tables)

    def _urge(self) -> None:
        cast(FaustProducer, self.app.producer).due_now()  # FromStartTransport's producer

    async def _send(self, topic: str, *, key: bytes | None, value: bytes | None,
                    partition: int | None, headers: list[tuple[str, bytes]]) -> Any:
        """Queue a record; returns the delivery future (await it to know the broker has it)."""
        return await self.app.producer.send(topic, key, value, partition, None, headers)


def build(settings: Settings) -> Pipeline:
    """The pipeline with every stream agent registered."""
    from streams.planning import register_planner
    from streams.scheduling import register_scheduler

    pipeline = Pipeline(settings)
    register_scheduler(pipeline)
    register_planner(pipeline)  # dead-letters through the processor's edge
    return pipeline
