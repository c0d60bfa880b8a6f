"""The one settings object. Built once (from flags and `DEVLINE_*` variables) and passed in.

Environment variables are read only by `Settings.from_env`, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
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
    import ssl

    from streams.artifacts import ArtifactStore

ENV_PREFIX = "DEVLINE_"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


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
        "PLAINTEXT", description="How clients talk to the brokers: "
        + ", ".join(SECURITY_PROTOCOLS))
    sasl_mechanism: str | None = Field(
        None, description="SASL mechanism (SASL_* protocols): " + ", ".join(SASL_MECHANISMS))
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password")
    ssl_cafile: str | None = Field(
        None, description="CA bundle (PEM) the brokers' certificates are checked against; "
        "unset: the system trust store (public CAs, as Confluent Cloud and MSK use)")
    ssl_certfile: str | None = Field(
        None, description="Client certificate (PEM, may hold the key too) for mutual TLS")
    ssl_keyfile: str | None = Field(None, description="Private key (PEM) of ssl_certfile")
    ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted ssl_keyfile")
    ssl_check_hostname: bool = Field(
        True, description="Check that a broker's certificate names its host (the chain is "
        "always verified)")
    work_partitions: int = Field(12, ge=1, description="Partitions of work topics")
    event_partitions: int = Field(12, ge=1, description="Partitions of the plan/event topics")
    replication: int = Field(1, ge=1, description="Replication factor for created topics")
    workspace: Path = Field(Path("devline-out"), description="Where finished files are written")
    data_dir: Path = Field(Path(".devline-data"), description="Local state of stream processors")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="Event loop of the processor, worker, tester and sink "
        "processes: uvloop (libuv, in C; the processor spends 6% less CPU per task) or "
        "Python's own asyncio loop")
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
    observe_snapshot_s: float = Field(
        30.0, ge=0, description="Seconds between snapshots of the read side's state (`devline "
        "observe`/`ui`) in the artifact store; a start restores the newest and reads on "
        "from its offsets instead of folding devline.events from the beginning (0: never)")
    max_attempts: int = Field(3, ge=1, description="Attempts before a task is dead-lettered")
    processor_linger_ms: int = Field(
        10, ge=0, le=1000, description="Milliseconds the stream processor's producer waits to "
        "gather records into one request (Kafka's linger.ms): fewer, bigger requests for it "
        "and the broker, at that much latency per hop")
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

    @model_validator(mode="before")
    @classmethod
    def _registry_userinfo(cls, data: Any) -> Any:
        """Credentials written into the registry URL move to registry_user/registry_password,
        so the URL itself (printed, logged, handed to the HTTP client) never holds them."""
        if not isinstance(data, dict) or not isinstance(data.get("registry_url"), str):
            return data
        url, user, password = split_userinfo(data["registry_url"])
        if user is None:
            return data
        if data.get("registry_user") or data.get("registry_password"):
            raise ValueError("the registry URL carries credentials and registry_user/"
                             "registry_password are set too; keep one of them")
        return {**data, "registry_url": url, "registry_user": user,
                "registry_password": password}

    @field_validator("security_protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        if value.upper() not in SECURITY_PROTOCOLS:
            raise ValueError(f"must be one of {', '.join(SECURITY_PROTOCOLS)}, got {value!r}")
        return value.upper()

    @field_validator("sasl_mechanism")
    @classmethod
    def _mechanism(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.upper() not in SASL_MECHANISMS:
            raise ValueError(f"must be one of {', '.join(SASL_MECHANISMS)}, got {value!r}")
        return value.upper()

    @model_validator(mode="after")
    def _security(self) -> Settings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not self.sasl_mechanism:
            raise ValueError(f"security_protocol {self.security_protocol} needs a SASL "
                             f"mechanism: set {self.env_name('sasl_mechanism')} to one of "
                             + ", ".join(SASL_MECHANISMS))
        if self.sasl_mechanism and not sasl:
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} is set but "
                             f"security_protocol is {self.security_protocol}: use SASL_SSL "
                             "(or SASL_PLAINTEXT)")
        if sasl and (not self.sasl_username or not self.sasl_password
                     or not self.sasl_password.get_secret_value()):
            raise ValueError(f"SASL ({self.sasl_mechanism}) needs a user name and a password: "
                             f"set {self.env_name('sasl_username')} and "
                             f"{self.env_name('sasl_password')}")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError(f"ssl_keyfile is set without ssl_certfile: set "
                             f"{self.env_name('ssl_certfile')} to the client certificate")
        return self

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
                problems.append(where + err["msg"].removeprefix("Value error, "))
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

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the brokers (None without TLS): the CA file, else the system
        trust store; the client certificate when one is set (mTLS). Built once per setting."""
        if not self.uses_tls:
            return None
        key_password = self.ssl_key_password.get_secret_value() if self.ssl_key_password \
            else None
        return _ssl_context(self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile,
                            key_password, self.ssl_check_hostname)

    def kafka_common(self) -> dict[str, Any]:
        """Security options in aiokafka's keyword form."""
        opts: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.uses_tls:
            opts["ssl_context"] = self.ssl_context()
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
        if self.uses_tls:
            # "probe": librdkafka looks in the system's usual CA locations.
            conf["ssl.ca.location"] = self.ssl_cafile or "probe"
            conf["ssl.endpoint.identification.algorithm"] = (
                "https" if self.ssl_check_hostname else "none")
            if self.ssl_certfile:
                conf["ssl.certificate.location"] = self.ssl_certfile
                conf["ssl.key.location"] = self.ssl_keyfile or self.ssl_certfile
            if self.ssl_key_password:
                conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf

    def registry_config(self) -> dict[str, Any]:
        """Options of the schema registry client besides its URL (basic auth)."""
        if not self.registry_user:
            return {}
        password = self.registry_password.get_secret_value() if self.registry_password else ""
        return {"basic.auth.user.info": f"{self.registry_user}:{password}"}

    def secrets(self) -> list[str]:
        """Every secret value set (to check that none is printed, logged or put in argv)."""
        found = (self.sasl_password, self.ssl_key_password, self.registry_password)
        return [s.get_secret_value() for s in found if s is not None and s.get_secret_value()]


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """`https://user:pass@host/x` -> (`https://host/x`, user, pass); (url, None, None) when
    the URL holds no credentials. Comma-separated URLs (registry fail-over) share them."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    cleaned, found = [], set()
    for part in url.split(","):
        parts = urlsplit(part.strip())
        if "@" not in parts.netloc:
            cleaned.append(part.strip())
            continue
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        found.add((unquote(user), unquote(password)))
        cleaned.append(urlunsplit(parts._replace(netloc=host)))
    if not found:
        return url, None, None
    if len(found) > 1:
        raise ValueError("registry URLs carry different credentials; give them once "
                         "(registry_user/registry_password)")
    user, password = found.pop()
    return ",".join(cleaned), user, password


@lru_cache(maxsize=8)
def _ssl_context(cafile: str | None, certfile: str | None, keyfile: str | None,
                 key_password: str | None, check_hostname: bool) -> ssl.SSLContext:
    import ssl

    for field, path in (("ssl_cafile", cafile), ("ssl_certfile", certfile),
                        ("ssl_keyfile", keyfile)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{Settings.env_name(field)}: no such file {path}")
    try:
        ctx = ssl.create_default_context(cafile=cafile)
    except ssl.SSLError as exc:
        raise ConfigError(f"{Settings.env_name('ssl_cafile')}: {cafile} holds no usable CA "
                          f"certificate ({exc.reason or exc})") from exc
    ctx.check_hostname = check_hostname
    if certfile:
        try:
            ctx.load_cert_chain(certfile, keyfile, password=key_password)
        except ssl.SSLError as exc:
            hint = f" (is {Settings.env_name('ssl_key_password')} right?)" if key_password \
                else f" (an encrypted key needs {Settings.env_name('ssl_key_password')})"
            raise ConfigError(f"cannot load the client certificate {certfile}"
                              f"{' with key ' + keyfile if keyfile else ''}: "
                              f"{exc.reason or exc}{hint}") from exc
    return ctx
