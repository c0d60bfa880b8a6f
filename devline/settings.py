"""The one settings object. Built once (from flags and `DEVLINE_*` variables) and passed in.

Environment variables are read only by `Settings.from_env`, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from devline.errors import ConfigError

if TYPE_CHECKING:
    from streams.artifacts import ArtifactStore

ENV_PREFIX = "DEVLINE_"


class Settings(BaseModel):
    """Everything a devline process needs to know about its surroundings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated")
    registry_url: str | None = Field(
        None, description="Schema registry URL; when set, events use Confluent wire format"
    )
    registry_user: str | None = Field(None, description="Schema registry basic-auth user")
    registry_password: SecretStr | None = Field(None, description="Schema registry password")
    topic_prefix: str = Field("", description="Prefix for every topic and group name")
    security_protocol: str = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
    )
    sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password")
    ssl_cafile: str | None = Field(None, description="CA bundle for SSL")
    work_partitions: int = Field(12, ge=1, description="Partitions of work topics")
    event_partitions: int = Field(12, ge=1, description="Partitions of the plan/event topics")
    replication: int = Field(1, ge=1, description="Replication factor for created topics")
    workspace: Path = Field(Path("devline-out"), description="Where finished files are written")
    data_dir: Path = Field(Path(".devline-data"), description="Local state of stream processors")
    table_store: Literal["rocksdb", "memory"] = Field(
        "rocksdb", description="Where a processor keeps its tables: rocksdb (on disk under "
        "<data_dir>/<topic_prefix>/faust; a restart reads only the changelog written since, "
        "and RAM does not grow with the tables) or memory (a restart replays the changelogs)")
    artifact_dir: Path | None = Field(
        None, description="Content-addressed artifact store (default: <data_dir>/artifacts)")
    artifact_url: str | None = Field(
        None, description="Artifact store in S3 or an S3-compatible server, shared by every "
        "process of a cluster: s3://bucket[/prefix][?endpoint=http://host:9000&region=...]; "
        "credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws")
    instance_id: str | None = Field(
        None, description="Static group membership id of a processor: a restart with the "
        "same id takes its partitions back at once instead of after the session timeout")
    executor_timeout: float = Field(
        600.0, gt=0, description="Time limit in seconds for an executor run that has none "
        "configured (demo, python)")
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest event accepted")
    plan_retention_s: float = Field(
        7 * 86400.0, gt=0, description="Seconds a finished plan (done or rejected) stays in "
        "the live tables before it is retired (tombstones in the changelogs; the event log "
        "keeps its history for `devline status`/`events`)")
    cache_retention_s: float = Field(
        30 * 86400.0, gt=0, description="Seconds a result-cache entry stays in the `cache` "
        "table after it was written or last hit; then it is deleted (a tombstone in the "
        "changelog) and `devline gc` deletes its ref in the artifact store")
    max_attempts: int = Field(3, ge=1, description="Attempts before a task is dead-lettered")
    processors: int = Field(
        1, ge=1, le=16, description="Stream processors `devline run` starts: they share the "
        "plans (Kafka assigns the partitions) and one of them, elected by Kafka, dispatches")
    min_workers: int = Field(2, ge=0, description="Fewest worker processes")
    max_workers: int = Field(10, ge=1, description="Most worker processes")
    worker_slots: int = Field(1, ge=1, description="Tasks one worker process runs at once")
    worker_grace: float = Field(
        30.0, ge=0, description="Seconds a stopping worker may spend finishing its tasks"
    )
    scale_target: float = Field(
        2.0, gt=0, description="Tasks (queued + running) per worker the autoscaler aims for"
    )
    scale_down_window: float = Field(
        60.0, ge=0, description="Seconds of lower load before the worker pool shrinks"
    )
    scale_tolerance: float = Field(
        0.1, ge=0, lt=1, description="Load within this fraction of capacity changes nothing"
    )
    executor: str = Field("demo", description="Default executor: demo, command, http, python")
    executor_config: Path | None = Field(
        None, description="YAML/JSON file: executor name -> its config (argv, base_url, ...)")
    qa_chain: str = Field(
        "default", description="Checker chain a plan gets unless its `qa` option names one: "
        "default (parse, lint, the file's tests), strict (+ type check), syntax, off")
    qa_config: Path | None = Field(
        None, description="TOML file of operator checker chains and checker options "
        "([chains.NAME], [checkers.NAME])")
    qa_timeout: float = Field(120.0, gt=0, description="Time limit in seconds per check")
    test_workers: int = Field(
        2, ge=0, le=64, description="Test worker processes `devline run` starts, and the "
        "shards a plan's integration tests are split into (plan option integration.shards)")
    test_plugins: bool = Field(
        False, description="Let integration test runs load the pytest plugins installed where "
        "devline runs (entry points); off by default: they are devline's, not the plan's")
    test_timeout: float = Field(
        900.0, gt=0, description="Time limit in seconds for one shard of integration tests")
    no_progress_repeats: int = Field(3, ge=2, description="Same error this often in a row: stop")
    breaker_open_s: float = Field(30.0, gt=0, description="Circuit breaker cool-down seconds")
    breaker_min_calls: int = Field(5, ge=1, description="Calls in the window before it may open")
    breaker_window: int = Field(20, ge=1, description="Calls in the breaker's sliding window")
    log_level: str = Field("INFO", description="Log level")

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for hostport in value.split(","):
            host, _, port = hostport.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed:
            raise ValueError("may hold only letters, digits, '.', '_' and '-'")
        return value

    @field_validator("artifact_url")
    @classmethod
    def _artifact_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        from streams.artifacts import S3Location

        try:
            S3Location.parse(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @model_validator(mode="after")
    def _one_artifact_store(self) -> Settings:
        if self.artifact_url and self.artifact_dir:
            raise ValueError("artifact_dir and artifact_url both name an artifact store; "
                             "set one (DEVLINE_ARTIFACT_DIR or DEVLINE_ARTIFACT_URL)")
        return self

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers ({self.min_workers}) exceeds max_workers "
                             f"({self.max_workers})")
        return self

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets `field`."""
        return ENV_PREFIX + field.upper()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `DEVLINE_*` variables, then explicit overrides (flags) on top."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(cls.env_name(name))
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls._validated(values)

    def updated(self, **overrides: Any) -> Settings:
        """A copy with `overrides` (None means unchanged), validated like `from_env`."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        return self._validated({**dict(self), **changes}) if changes else self

    @classmethod
    def _validated(cls, values: dict[str, Any]) -> Settings:
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"])
                where = f"{field} ({cls.env_name(field)}): " if field else ""
                problems.append(where + err["msg"])
            raise ConfigError("invalid settings: " + "; ".join(problems)) from exc

    def artifacts(self) -> Path:
        """Where the local artifact store keeps contents by hash. ConfigError when the store
        is in S3: a process that built a local store then would not share the cluster's."""
        if self.artifact_url:
            raise ConfigError("the artifact store is in S3 (DEVLINE_ARTIFACT_URL), not a "
                              "directory: build it with Settings.artifact_store()")
        return self.artifact_dir or self.data_dir / "artifacts"

    def artifact_store(self) -> ArtifactStore:
        """The artifact store: the S3 bucket of `artifact_url`, else the local directory."""
        from streams.artifacts import LocalArtifactStore, S3ArtifactStore

        if self.artifact_url:
            return S3ArtifactStore.from_url(self.artifact_url)
        return LocalArtifactStore(self.artifacts())

    def topic(self, name: str) -> str:
        """Full topic name for a catalogue name such as `devline.plans`."""
        return f"{self.topic_prefix}{name}"

    def group(self, name: str) -> str:
        """Consumer group id, prefixed like topics so test runs never share groups."""
        return f"{self.topic_prefix}{name}"

    def kafka_common(self) -> dict[str, Any]:
        """Security options in aiokafka's keyword form."""
        opts: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.ssl_cafile:
            import ssl

            opts["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        return opts

    def confluent_common(self) -> dict[str, Any]:
        """The same options in librdkafka's dotted form (confluent-kafka clients)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        if self.ssl_cafile:
            conf["ssl.ca.location"] = self.ssl_cafile
        return conf
