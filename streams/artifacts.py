"""Content-addressed artifact store: file contents by sha256, written once, read by anyone.

Events and tables carry hashes; contents live here. `put` is idempotent (the same bytes
land at the same name), so storing an artifact is an effect that can be redone after any
crash. The local store is a directory shared by every devline process of one machine; the
S3 store is a bucket (AWS S3 or any S3-compatible server) shared by a whole cluster.
Blocking I/O (boto3, big files) runs in a thread, never in the event loop. A local file of
at most `INLINE_IO_BYTES` (a ref, a typical source file) is read or written in the loop:
that takes tens of microseconds, less than the hop to a thread and back (and every task
stores or looks up one or two of them in each process it passes through).

Both stores also list what they hold and delete by name, for `devline gc` (`streams.gc`).
Storing bytes the store already has refreshes the object's modification time when it is
older than `TOUCH_AFTER_S`, so an old object that becomes referenced again looks recent to
the collector, whose grace period (at least twice that) protects it until the event that
references it is folded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from devline.errors import ConfigError, DevlineError


class ArtifactError(DevlineError):
    """The store could not be read or written (disk full, permissions, S3 unreachable or
    refusing); retried by callers."""

    retryable = True


_HEX64 = re.compile(r"[0-9a-f]{64}")
TOUCH_AFTER_S = 3600.0  # an object stored again after this long gets a new modification time
INLINE_IO_BYTES = 64 * 1024  # local files up to this are read and written in the event loop


@dataclass(frozen=True)
class Stored:
    """An object or a ref as a listing shows it."""

    name: str         # the object's sha256, or the ref's name
    size: int         # bytes
    modified_ms: int  # file mtime (local) or LastModified (S3), ms since the epoch


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checked_digest(digest: str) -> str:
    """`digest` when it is a lowercase sha256 hex digest (it becomes a file or key name)."""
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ArtifactError(f"not a sha256 hex digest: {digest[:80]!r}")
    return digest


class ArtifactStore(Protocol):
    async def put(self, data: bytes) -> str:
        """Store `data`; return its sha256 (hex). Storing the same bytes twice is a no-op."""
        ...

    async def get(self, digest: str) -> bytes | None:
        """The bytes stored under `digest`, or None when the store does not have them."""
        ...

    async def put_ref(self, name: str, digest: str) -> None:
        """Point the ref `name` (a sha256 hex, e.g. a cache key) at `digest`; idempotent."""
        ...

    async def get_ref(self, name: str) -> str | None:
        """The digest the ref `name` points at, or None."""
        ...


class LocalArtifactStore:
    """`root/sha256/ab/abcdef...`: one file per content, atomically renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, digest: str) -> Path:
        checked_digest(digest)
        return self.root / "sha256" / digest[:2] / digest

    async def put(self, data: bytes) -> str:
        if len(data) <= INLINE_IO_BYTES:
            return self.put_sync(data)
        return await asyncio.to_thread(self.put_sync, data)

    async def get(self, digest: str) -> bytes | None:
        path = self.path_for(digest)
        try:
            small = path.stat().st_size <= INLINE_IO_BYTES
        except FileNotFoundError:
            return None
        except OSError:
            small = False  # get_sync says why
        if small:
            return self.get_sync(digest)
        return await asyncio.to_thread(self.get_sync, digest)

    async def put_ref(self, name: str, digest: str) -> None:
        self._put_ref(name, checked_digest(digest))  # 64 bytes: in the loop

    async def get_ref(self, name: str) -> str | None:
        return self._get_ref(name)

    async def objects(self) -> list[Stored]:
        """Every object (`sha256/ab/<digest>`); temporary files of writers are not listed."""
        return await asyncio.to_thread(self._listing, "sha256")

    async def refs(self) -> list[Stored]:
        """Every ref (`refs/ab/<name>`)."""
        return await asyncio.to_thread(self._listing, "refs")

    async def delete(self, digest: str, *, unless_since_ms: int | None = None) -> bool:
        """Delete an object; False when absent, or modified at or after `unless_since_ms`
        (stored again meanwhile: someone needs it)."""
        return await asyncio.to_thread(self._delete, self.path_for(digest), unless_since_ms)

    async def delete_ref(self, name: str, *, unless_since_ms: int | None = None) -> bool:
        """Delete a ref; False when absent or modified at or after `unless_since_ms`."""
        return await asyncio.to_thread(self._delete, self._ref_path(name), unless_since_ms)

    def _listing(self, kind: str) -> list[Stored]:
        found: list[Stored] = []
        try:
            with os.scandir(self.root / kind) as shards:
                dirs = [d.path for d in shards if d.is_dir(follow_symlinks=False)]
            for path in sorted(dirs):
                with os.scandir(path) as entries:
                    for entry in entries:
                        if not _HEX64.fullmatch(entry.name):
                            continue
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # deleted while listed
                        found.append(Stored(entry.name, st.st_size, st.st_mtime_ns // 1_000_000))
        except FileNotFoundError:
            return found
        except OSError as exc:
            raise ArtifactError(f"cannot list {kind} under {self.root}: "
                                f"{exc.strerror or exc}") from exc
        return found

    def _delete(self, path: Path, unless_since_ms: int | None) -> bool:
        try:
            if unless_since_ms is not None and \
                    path.stat().st_mtime_ns // 1_000_000 >= unless_since_ms:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ArtifactError(f"cannot delete {path.name[:12]} under {self.root}: "
                                f"{exc.strerror or exc}") from exc
        return True

    def _ref_path(self, name: str) -> Path:
        checked_digest(name)
        return self.root / "refs" / name[:2] / name

    def _put_ref(self, name: str, digest: str) -> None:
        # Written again even when it already says `digest` (a redelivery): a rename costs
        # what reading it first would, and the newer mtime only tells the collector the
        # ref is in use.
        self._write(self._ref_path(name), digest.encode(), f"ref {name[:12]}")

    def _get_ref(self, name: str) -> str | None:
        try:
            value = self._ref_path(name).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactError(f"cannot read ref {name[:12]}: {exc.strerror}") from exc
        return value if _HEX64.fullmatch(value) else None  # torn: as good as missing

    def put_sync(self, data: bytes) -> str:
        digest = sha256(data)
        target = self.path_for(digest)
        with contextlib.suppress(OSError):  # absent or unreadable: write it
            st = target.stat()
            if st.st_size == len(data):  # a file of another length is replaced
                if time.time() - st.st_mtime > TOUCH_AFTER_S:
                    os.utime(target)  # needed again: young for the collector's grace
                return digest
        self._write(target, data, f"artifact {digest[:12]}")
        return digest

    def _write(self, target: Path, data: bytes, what: str) -> None:
        """Atomically: a reader sees the old file or the whole new one, never a torn one."""
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            try:
                tmp.write_bytes(data)
            except FileNotFoundError:  # the first file of its shard folder
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError as exc:
            raise ArtifactError(f"cannot store {what} under {self.root}: "
                                f"{exc.strerror or exc}") from exc

    def get_sync(self, digest: str) -> bytes | None:
        try:
            data = self.path_for(digest).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {digest[:12]}: {exc.strerror}") from exc
        if sha256(data) != digest:  # a torn or tampered file is as good as missing
            return None
        return data


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ADDRESSING = ("auto", "path", "virtual")
_URL_FORM = "s3://bucket[/prefix][?endpoint=http://host:port&region=...&addressing=path]"


@dataclass(frozen=True)
class S3Location:
    """Where an S3 store keeps its objects: `s3://bucket/prefix?endpoint=...&region=...`.

    Credentials never appear here: boto3 finds them (AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, an instance role).
    """

    bucket: str
    prefix: str = ""  # "" or ending in "/"
    endpoint: str | None = None  # None: AWS S3 itself
    region: str | None = None
    addressing: str = "auto"

    @property
    def where(self) -> str:
        """The bucket and endpoint, for error messages."""
        return f"bucket {self.bucket!r} at {self.endpoint or 'AWS S3'}"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """Parse an artifact URL; ConfigError naming the bad part (never echoing a secret)."""
        parts = urlsplit(url.strip())
        if parts.scheme != "s3":
            raise ConfigError(f"the artifact URL must look like {_URL_FORM} (for a local "
                              "directory set DEVLINE_ARTIFACT_DIR instead)")
        if "@" in parts.netloc:
            raise ConfigError("the artifact URL must not carry credentials: set "
                              "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
        if not _BUCKET.fullmatch(parts.netloc):
            raise ConfigError(f"artifact URL: {parts.netloc!r} is not an S3 bucket name "
                              "(3-63 lowercase letters, digits, '.' and '-')")
        if parts.fragment:
            raise ConfigError("artifact URL: a '#fragment' has no meaning here")
        prefix = parts.path.strip("/")
        if prefix and any(seg in ("", ".", "..") for seg in prefix.split("/")):
            raise ConfigError(f"artifact URL: prefix {prefix!r} has an empty, '.' or '..' part")
        options: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name not in ("endpoint", "region", "addressing"):
                raise ConfigError(f"artifact URL: unknown option {name!r} (known: endpoint, "
                                  "region, addressing)")
            if name in options:
                raise ConfigError(f"artifact URL: option {name!r} given twice")
            options[name] = value
        endpoint = options.get("endpoint") or None
        if endpoint is not None:
            endpoint = _checked_endpoint(endpoint)
        region = options.get("region") or None
        if region is not None and not _REGION.fullmatch(region):
            raise ConfigError(f"artifact URL: {region!r} is not a region name")
        addressing = options.get("addressing") or ("path" if endpoint else "auto")
        if addressing not in _ADDRESSING:
            raise ConfigError(f"artifact URL: addressing must be one of {', '.join(_ADDRESSING)}")
        return cls(parts.netloc, prefix + "/" if prefix else "", endpoint, region, addressing)


def _checked_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("artifact URL: endpoint must be http(s)://host[:port], e.g. "
                          "endpoint=http://127.0.0.1:9000")
    if "@" in parts.netloc:
        raise ConfigError("artifact URL: the endpoint must not carry credentials")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"artifact URL: bad port in endpoint {parts.netloc!r}") from exc
    if parts.query or parts.fragment:
        raise ConfigError("artifact URL: the endpoint must have no query or fragment")
    return endpoint.rstrip("/")


# A missing key: NoSuchKey from GET, a bare 404 from HEAD (which has no body to say more).
_ABSENT = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                     "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "403"})


class S3ArtifactStore:
    """`<prefix>sha256/ab/abcdef...` in a bucket of AWS S3 or an S3-compatible server.

    boto3 blocks, so each call runs in a thread; one client serves them all (boto3 clients
    are thread-safe, sessions are not, so the client is made once, under a lock). boto3
    itself retries throttling, 5xx and dropped connections a few times; what still fails
    is an `ArtifactError` (retryable), and the message names the bucket and endpoint.
    The credentials need s3:GetObject, s3:PutObject and s3:ListBucket (without ListBucket
    a missing object reads as 403, not 404).
    """

    def __init__(self, location: S3Location) -> None:
        try:
            import boto3  # noqa: F401 - fail at start-up, not at the first artifact
        except ImportError as exc:
            raise ConfigError("the S3 artifact store needs boto3: "
                              "pip install 'devline[s3]'") from exc
        self.location = location
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> S3ArtifactStore:
        return cls(S3Location.parse(url))

    def key_for(self, digest: str) -> str:
        checked_digest(digest)
        return f"{self.location.prefix}sha256/{digest[:2]}/{digest}"

    async def put(self, data: bytes) -> str:
        return await asyncio.to_thread(self.put_sync, data)

    async def get(self, digest: str) -> bytes | None:
        return await asyncio.to_thread(self.get_sync, digest)

    def ref_key(self, name: str) -> str:
        checked_digest(name)
        return f"{self.location.prefix}refs/{name[:2]}/{name}"

    async def put_ref(self, name: str, digest: str) -> None:
        key, loc, value = self.ref_key(name), self.location, checked_digest(digest).encode()
        await asyncio.to_thread(self._call, "store", key, lambda s3: s3.put_object(
            Bucket=loc.bucket, Key=key, Body=value, ContentType="text/plain"))

    async def get_ref(self, name: str) -> str | None:
        data = await asyncio.to_thread(self._read, self.ref_key(name))
        value = data.decode("ascii", "replace").strip() if data else ""
        return value if _HEX64.fullmatch(value) else None

    def put_sync(self, data: bytes) -> str:
        """HEAD first, PUT only when the object is absent or not ours. Re-sending bytes the
        bucket has would cost bandwidth, a PUT request and, in a versioned bucket, a new
        version for every redone effect. An object of another length or without our
        sha256 mark (torn by hand, copied in by a tool) is replaced. S3 PUTs are atomic:
        concurrent puts of the same bytes leave the same object."""
        digest = sha256(data)
        key = self.key_for(digest)
        loc = self.location
        # A 403 on HEAD (no s3:ListBucket) leaves the decision to the PUT.
        head = self._call("check", key, lambda s3: s3.head_object(Bucket=loc.bucket, Key=key),
                          absent=_ABSENT | {"403", "AccessDenied"})
        if (head is not None and head.get("ContentLength") == len(data)
                and head.get("Metadata", {}).get("sha256") == digest):
            if _age_s(head.get("LastModified")) > TOUCH_AFTER_S:
                # Needed again: a copy onto itself renews LastModified (no upload).
                self._call("store", key, lambda s3: s3.copy_object(
                    Bucket=loc.bucket, Key=key, CopySource={"Bucket": loc.bucket, "Key": key},
                    MetadataDirective="REPLACE", Metadata={"sha256": digest},
                    ContentType="application/octet-stream"))
            return digest
        # Content-MD5: the server rejects a body damaged on the way (every S3 clone knows it).
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        self._call("store", key, lambda s3: s3.put_object(
            Bucket=loc.bucket, Key=key, Body=data, ContentMD5=md5,
            ContentType="application/octet-stream", Metadata={"sha256": digest}))
        return digest

    async def objects(self) -> list[Stored]:
        """Every object under `<prefix>sha256/` (needs s3:ListBucket)."""
        return await asyncio.to_thread(self._listing, "sha256/")

    async def refs(self) -> list[Stored]:
        """Every ref under `<prefix>refs/`."""
        return await asyncio.to_thread(self._listing, "refs/")

    async def delete(self, digest: str, *, unless_since_ms: int | None = None) -> bool:
        """Delete an object (needs s3:DeleteObject); False when absent or modified at or
        after `unless_since_ms`."""
        return await asyncio.to_thread(self._delete, self.key_for(digest), unless_since_ms)

    async def delete_ref(self, name: str, *, unless_since_ms: int | None = None) -> bool:
        return await asyncio.to_thread(self._delete, self.ref_key(name), unless_since_ms)

    def _listing(self, kind: str) -> list[Stored]:
        loc = self.location
        prefix = f"{loc.prefix}{kind}"

        def pages(s3: Any) -> list[Stored]:
            found: list[Stored] = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket,
                                                                      Prefix=prefix):
                for obj in page.get("Contents", ()):
                    name = str(obj["Key"]).rsplit("/", 1)[-1]
                    if _HEX64.fullmatch(name):
                        found.append(Stored(name, int(obj.get("Size") or 0),
                                            int(obj["LastModified"].timestamp() * 1000)))
            return found

        listed: list[Stored] = self._call("list", prefix, pages)
        return listed

    def _delete(self, key: str, unless_since_ms: int | None) -> bool:
        loc = self.location
        head = self._call("check", key, lambda s3: s3.head_object(Bucket=loc.bucket, Key=key),
                          absent=_ABSENT)
        if head is None:
            return False
        if unless_since_ms is not None and head.get("LastModified") is not None and \
                int(head["LastModified"].timestamp() * 1000) >= unless_since_ms:
            return False
        self._call("delete", key, lambda s3: s3.delete_object(Bucket=loc.bucket, Key=key))
        return True

    def get_sync(self, digest: str) -> bytes | None:
        data = self._read(self.key_for(digest))
        if data is None or sha256(data) != digest:  # tampered is as good as missing
            return None
        return data

    def _read(self, key: str) -> bytes | None:
        """The object's bytes, or None when absent."""
        loc = self.location

        def read(s3: Any) -> bytes:
            body = s3.get_object(Bucket=loc.bucket, Key=key)["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
            return data

        result: bytes | None = self._call("read", key, read, absent=_ABSENT)
        return result

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                loc = self.location
                session = boto3.session.Session()
                region = loc.region or session.region_name or ("us-east-1" if loc.endpoint
                                                               else None)
                self._client = session.client("s3", endpoint_url=loc.endpoint,
                                              region_name=region, config=Config(
                    connect_timeout=10, read_timeout=60, max_pool_connections=32,
                    retries={"mode": "standard", "max_attempts": 3},
                    s3={"addressing_style": loc.addressing},
                    # Newer botocore adds CRC32 trailers and checksum-mode headers that
                    # several S3 clones reject; Content-MD5 and our sha256 check suffice.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required"))
            return self._client

    def _call(self, action: str, key: str, op: Callable[[Any], Any],
              absent: frozenset[str] = frozenset()) -> Any:
        """`op(client)`; None when it fails with one of the `absent` codes."""
        from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

        try:
            return op(self._s3())
        except ClientError as exc:
            if _code(exc) in absent:
                return None
            raise self._failure(action, key, exc) from exc
        except ParamValidationError:
            raise  # a bug of ours, not the store's
        except (BotoCoreError, OSError) as exc:
            raise self._failure(action, key, exc) from exc

    def _failure(self, action: str, key: str, exc: Exception) -> ArtifactError:
        from botocore.exceptions import (
            ClientError,
            CredentialRetrievalError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        where = self.location.where
        if isinstance(exc, NoCredentialsError | PartialCredentialsError
                      | CredentialRetrievalError):
            return ArtifactError(f"no usable AWS credentials for the artifact {where} "
                                 f"({type(exc).__name__}): set AWS_ACCESS_KEY_ID and "
                                 "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code == "NoSuchBucket":
                return ArtifactError(f"the artifact {where} does not exist: create it, or "
                                     "point DEVLINE_ARTIFACT_URL at one that does")
            if code in _DENIED:
                return ArtifactError(f"the artifact {where} refused to {action} {key} ({code}):"
                                     " check the AWS credentials and the bucket's policy")
            message = exc.response.get("Error", {}).get("Message") or ""
            return ArtifactError(f"cannot {action} artifact {key} in the {where}: {code} "
                                 f"{message}".rstrip())
        return ArtifactError(f"cannot {action} artifact {key}: the {where} did not answer "
                             f"({type(exc).__name__}: {exc})")


def _age_s(modified: Any) -> float:
    """Seconds since an S3 LastModified (a datetime); 0 when unknown."""
    return time.time() - modified.timestamp() if modified is not None else 0.0


def _code(exc: Any) -> str:
    """The S3 error code of a ClientError ("NoSuchKey", "SlowDown", "404", ...)."""
    return str(exc.response.get("Error", {}).get("Code")
               or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
