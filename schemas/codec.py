"""Encode and decode devline events in Confluent or Avro single-object wire format.

    codec = Codec.from_settings(settings)
    data = codec.encode("PlanSubmitted", record)
    event_type, record = codec.decode(data)

With a registry URL, `encode` writes Confluent's format (0x00, 4-byte big-endian schema id,
Avro binary) and registers each schema under its full record name (RecordNameStrategy).
Without one it writes single-object encoding (0xC3 0x01, 8-byte little-endian CRC-64-AVRO
fingerprint of the Parsing Canonical Form, Avro binary). `decode` reads both.

Records are plain dicts; timestamps are int milliseconds both ways (logical types are
ignored by the codec and kept in the schemas for other tools). Every failure to decode is
one `DecodeError`; bytes are bounds-checked (`schemas.guard`) before fastavro sees them.

A format that does not match this codec's is logged once per codec: a single-object
record with a registry configured (its producer writes what registry clients cannot read),
or a Confluent-framed one without (this process writes what those clients cannot read).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.schema import fingerprint as crc64_fingerprint
from fastavro.schema import to_parsing_canonical_form

from devline.errors import ConfigError, DecodeError, DevlineError, SchemaError
from schemas import NAMESPACE, SCHEMA_DIR, load_schemas
from schemas.checks import compile_checker
from schemas.guard import Malformed, compile_guard

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from devline.settings import Settings

log = logging.getLogger("devline.codec")

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0
_SINGLE_HEADER = 10  # magic (2) + fingerprint (8)
_CONFLUENT_HEADER = 5  # magic (1) + schema id (4)
_NEGATIVE_CACHE = 4096


class RegistryUnavailable(DevlineError):
    """The schema registry did not answer; the message may be fine, so retry later."""

    retryable = True


def plain_schema(schema: Any) -> Any:
    """A copy of `schema` without logical types, so fastavro reads/writes the raw values."""
    if isinstance(schema, list):
        return [plain_schema(branch) for branch in schema]
    if isinstance(schema, dict):
        return {k: plain_schema(v) for k, v in schema.items() if k != "logicalType"}
    return schema


def _parse(schema: Any) -> Any:
    """fastavro's parsed form: a dict for records, a str or list for other schemas."""
    return fastavro.parse_schema(schema)


@dataclass(frozen=True)
class _Writer:
    """How to read bytes written with one writer schema into one of our event types."""

    event_type: str
    writer: dict[str, Any]
    reader: dict[str, Any] | None  # None when writer and reader schemas are the same
    guard: Callable[[bytes, int], None]


@dataclass(frozen=True)
class _EventType:
    """One event type: its contract, the parsed forms the codec uses, and its identity."""

    name: str
    full_name: str
    contract: dict[str, Any]
    parsed: dict[str, Any]
    plain: dict[str, Any]
    check: Callable[[Any], None]
    canonical: str
    fingerprint: bytes
    schema_str: str

    @classmethod
    def build(cls, contract: dict[str, Any]) -> _EventType:
        parsed = _parse(contract)
        canonical = to_parsing_canonical_form(parsed)
        return cls(
            name=contract["name"],
            full_name=f"{NAMESPACE}.{contract['name']}",
            contract=contract,
            parsed=parsed,
            plain=_parse(plain_schema(contract)),
            check=compile_checker(parsed),
            canonical=canonical,
            fingerprint=bytes.fromhex(crc64_fingerprint(canonical, "CRC-64-AVRO")),
            schema_str=json.dumps(contract, separators=(",", ":")),
        )

    def same_writer(self) -> _Writer:
        return _Writer(self.name, self.plain, None, compile_guard(self.plain))


class Codec:
    """Turns event records into bytes and back; one instance per process is enough."""

    def __init__(
        self,
        registry_url: str | None = None,
        *,
        registry_config: Mapping[str, Any] | None = None,
        max_bytes: int = 8 * 1024 * 1024,
        registry_client: SchemaRegistryClient | None = None,
        schema_dir: Path = SCHEMA_DIR,
    ) -> None:
        """Load and parse every schema; connect to the registry lazily on first use.

        `registry_client` overrides the URL with a ready client (tests share one mock).
        """
        if max_bytes < _SINGLE_HEADER + 1:
            raise ConfigError(f"max_bytes must be at least {_SINGLE_HEADER + 1}")
        self.max_bytes = max_bytes
        self._types = {name: _EventType.build(c) for name, c in load_schemas(schema_dir).items()}
        self._by_fullname = {t.full_name: t for t in self._types.values()}
        self._by_fingerprint = {t.fingerprint: t.same_writer() for t in self._types.values()}
        self._by_fingerprint.update(self._history(schema_dir / "history"))
        self._registry = registry_client
        if self._registry is None and registry_url:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            conf = {**(registry_config or {}), "url": registry_url}
            self._registry = SchemaRegistryClient.new_client(conf)
        self._ids: dict[str, int] = {}  # event type -> registered schema id
        self._by_id: dict[int, _Writer] = {}  # schema id -> how to read it
        self._missing: set[int] = set()  # ids the registry said it does not know
        self._warned: set[str] = set()  # wire-format mismatches already logged

    @classmethod
    def from_settings(cls, settings: Settings) -> Codec:
        """A codec for `settings.registry_url` (with basic auth) and `max_message_bytes`."""
        config: dict[str, Any] = {}
        if settings.registry_user:
            password = settings.registry_password
            secret = password.get_secret_value() if password is not None else ""
            config["basic.auth.user.info"] = f"{settings.registry_user}:{secret}"
        return cls(
            settings.registry_url, registry_config=config, max_bytes=settings.max_message_bytes
        )

    @property
    def event_types(self) -> list[str]:
        """Short record names of every event type, e.g. `PlanSubmitted`."""
        return list(self._types)

    @property
    def registry(self) -> SchemaRegistryClient | None:
        """The schema registry client, or None in single-object mode."""
        return self._registry

    def schema(self, event_type: str) -> dict[str, Any]:
        """The fastavro-parsed schema of `event_type`, as written in its `.avsc` file."""
        return self._type(event_type).parsed

    def fingerprint(self, event_type: str) -> bytes:
        """The 8-byte little-endian CRC-64-AVRO fingerprint of `event_type`'s schema."""
        return self._type(event_type).fingerprint

    def validate(self, event_type: str, record: Any) -> None:
        """Raise `SchemaError` (a `RecordError` with `.field`) if `record` does not match."""
        self._type(event_type).check(record)

    def encode(self, event_type: str, record: Mapping[str, Any]) -> bytes:
        """Validate `record` and encode it in this codec's wire format."""
        data = self.encode_unbounded(event_type, record)
        if len(data) > self.max_bytes:
            raise SchemaError(
                f"{event_type}: encoded record is {len(data)} bytes, over the "
                f"{self.max_bytes}-byte limit; move large content to the content store"
            )
        return data

    def encode_unbounded(self, event_type: str, record: Mapping[str, Any]) -> bytes:
        """`encode` without the size limit: to measure a record before deciding how to
        send it (e.g. a plan too big for one record goes by reference)."""
        kind = self._type(event_type)
        kind.check(record)
        if self._registry is not None:
            header = bytes([CONFLUENT_MAGIC]) + self._schema_id(kind).to_bytes(4, "big")
        else:
            header = SINGLE_OBJECT_MAGIC + kind.fingerprint
        out = io.BytesIO()
        out.write(header)
        try:
            fastavro.schemaless_writer(out, kind.plain, record)
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            raise SchemaError(f"{event_type}: cannot encode record: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes | bytearray | memoryview) -> tuple[str, dict[str, Any]]:
        """Decode one event in either wire format into (event type, record)."""
        if not isinstance(data, bytes):
            if not isinstance(data, (bytearray, memoryview)):
                raise DecodeError(f"expected bytes, got {type(data).__name__}")
            data = bytes(data)
        size = len(data)
        if size > self.max_bytes:
            raise DecodeError(f"message is {size} bytes, over the {self.max_bytes}-byte limit")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if size < _SINGLE_HEADER:
                raise DecodeError(f"truncated single-object header ({size} bytes)")
            writer = self._by_fingerprint.get(data[2:_SINGLE_HEADER])
            if writer is None:
                raise DecodeError(
                    f"unknown schema fingerprint {data[2:_SINGLE_HEADER].hex()} "
                    "(not a devline event, or written with a schema this version does not know)"
                )
            offset = _SINGLE_HEADER
            if self._registry is not None:
                self._warn_once("single-object", (
                    "decoded an Avro single-object %s record although a schema registry is "
                    "configured: a producer writes without the registry (a devline process "
                    "without DEVLINE_REGISTRY_URL, a client such as examples/node-producer, "
                    "or one from before the registry was set up); devline reads it, registry "
                    "clients (Confluent deserializers) reading the topic fail on it"),
                    writer.event_type)
        elif data[:1] == b"\x00":
            if size < _CONFLUENT_HEADER:
                raise DecodeError(f"truncated Confluent header ({size} bytes)")
            writer = self._writer_for_id(int.from_bytes(data[1:_CONFLUENT_HEADER], "big"))
            offset = _CONFLUENT_HEADER
        else:
            raise DecodeError(
                f"unknown wire format: starts with {data[:2].hex() or 'nothing'}, expected "
                "00 (Confluent) or c301 (Avro single-object)"
            )
        return writer.event_type, self._read(writer, data, offset)

    # -- internals --------------------------------------------------------------------

    def _warn_once(self, mismatch: str, message: str, *args: object) -> None:
        """Log a wire-format mismatch the first time this codec sees it, not per record."""
        if mismatch not in self._warned:
            self._warned.add(mismatch)
            log.warning(message + " (logged once)", *args)

    def _history(self, directory: Path) -> dict[bytes, _Writer]:
        """Earlier versions of our schemas (`history/<name>.vN.avsc`), so single-object
        records written before a field was added still decode, resolved to the current
        schema (new fields take their defaults)."""
        found: dict[bytes, _Writer] = {}
        for path in sorted(directory.glob("*.avsc")):
            old = json.loads(path.read_text(encoding="utf-8"))
            kind = self._types.get(old.get("name"))
            if kind is None:
                raise SchemaError(f"{path}: {old.get('name')!r} is not a current event type")
            writer = _parse(plain_schema(old))
            canonical = to_parsing_canonical_form(writer)
            if canonical == kind.canonical:
                continue
            fingerprint = bytes.fromhex(crc64_fingerprint(canonical, "CRC-64-AVRO"))
            found[fingerprint] = _Writer(kind.name, writer, kind.plain, compile_guard(writer))
        return found

    def _type(self, event_type: str) -> _EventType:
        try:
            return self._types[event_type]
        except KeyError:
            raise SchemaError(
                f"unknown event type {event_type!r}; known: {', '.join(self._types)}"
            ) from None

    @staticmethod
    def _read(writer: _Writer, data: bytes, offset: int) -> dict[str, Any]:
        try:
            writer.guard(data, offset)
            stream = io.BytesIO(data)
            stream.seek(offset)
            record = fastavro.schemaless_reader(stream, writer.writer, writer.reader)
        except Malformed as exc:
            raise DecodeError(f"malformed {writer.event_type}: {exc}") from None
        except Exception as exc:  # fastavro raises many types; all mean "bad bytes" here
            raise DecodeError(
                f"cannot decode {writer.event_type}: {type(exc).__name__}: {exc}"
            ) from exc
        if stream.tell() != len(data):  # the guard already checks this; belt and braces
            raise DecodeError(f"{len(data) - stream.tell()} trailing bytes after the record")
        if not isinstance(record, dict):
            raise DecodeError(f"{writer.event_type} did not decode to a record")
        return record

    def _schema_id(self, kind: _EventType) -> int:
        """Register `kind` under its full name (cached) and return the schema id."""
        schema_id = self._ids.get(kind.name)
        if schema_id is not None:
            return schema_id
        from confluent_kafka.schema_registry import Schema, SchemaRegistryError

        assert self._registry is not None
        try:
            schema_id = int(
                self._registry.register_schema(kind.full_name, Schema(kind.schema_str, "AVRO"))
            )
        except SchemaRegistryError as exc:
            if exc.http_status_code in (409, 422):
                raise SchemaError(f"registry refused {kind.full_name}: {exc}") from exc
            raise RegistryUnavailable(f"cannot register {kind.full_name}: {exc}") from exc
        except Exception as exc:
            raise RegistryUnavailable(f"cannot register {kind.full_name}: {exc}") from exc
        self._ids[kind.name] = schema_id
        self._by_id.setdefault(schema_id, self._by_fingerprint[kind.fingerprint])
        return schema_id

    def _writer_for_id(self, schema_id: int) -> _Writer:
        """How to read bytes written with registry schema `schema_id` (cached)."""
        writer = self._by_id.get(schema_id)
        if writer is not None:
            return writer
        if self._registry is None:
            self._warn_once("confluent", (
                "read a Confluent-framed record (schema id %d) but no schema registry is "
                "configured: other producers of this topic use a registry, and what this "
                "process writes (Avro single-object) their registry clients cannot read; "
                "set DEVLINE_REGISTRY_URL"), schema_id)
            raise DecodeError(
                f"Confluent-framed message (schema id {schema_id}) but no schema registry is "
                "configured (set DEVLINE_REGISTRY_URL)"
            )
        if schema_id in self._missing:
            raise DecodeError(f"unknown schema id {schema_id} (registry does not have it)")
        writer = self._writer_from_registry(schema_id)
        self._by_id[schema_id] = writer
        return writer

    def _writer_from_registry(self, schema_id: int) -> _Writer:
        from confluent_kafka.schema_registry import SchemaRegistryError

        assert self._registry is not None
        try:
            found = self._registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                if len(self._missing) >= _NEGATIVE_CACHE:
                    self._missing.clear()
                self._missing.add(schema_id)
                raise DecodeError(
                    f"unknown schema id {schema_id} (registry does not have it)"
                ) from exc
            raise RegistryUnavailable(f"cannot fetch schema id {schema_id}: {exc}") from exc
        except Exception as exc:
            raise RegistryUnavailable(f"cannot fetch schema id {schema_id}: {exc}") from exc
        if (found.schema_type or "AVRO") != "AVRO" or found.references:
            raise DecodeError(f"schema id {schema_id} is not a self-contained Avro schema")
        try:
            raw = json.loads(found.schema_str or "")
            writer = _parse(plain_schema(raw))
            canonical = to_parsing_canonical_form(writer)
        except Exception as exc:
            raise DecodeError(f"schema id {schema_id} is not a valid Avro schema: {exc}") from exc
        name = writer.get("name") if isinstance(writer, dict) else None
        kind = self._by_fullname.get(name) if isinstance(name, str) else None
        if kind is None:
            raise DecodeError(
                f"schema id {schema_id} is {name or 'not a record'}, not a devline event"
            )
        if canonical == kind.canonical:
            return self._by_fingerprint[kind.fingerprint]
        try:
            guard = compile_guard(writer)
        except Exception as exc:  # e.g. a schema too deeply nested to walk
            raise DecodeError(f"schema id {schema_id} cannot be checked: {exc}") from exc
        return _Writer(kind.name, writer, kind.plain, guard)
