"""The artifact store's behaviour, the same for the local directory and for S3.

The S3 store is tested against a real S3-protocol server on a local socket (moto's server,
in a thread of this process); each test gets its own uuid-named bucket.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devline.errors import ConfigError
from devline.settings import Settings
from streams.artifacts import (
    ArtifactError,
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    S3Location,
    sha256,
)

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

SECRET = f"never-print-{uuid.uuid4().hex}"  # the fake secret key of these tests


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One moto S3 server for the session, on a free port of 127.0.0.1."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_env(monkeypatch, tmp_path, SECRET)


def isolate_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secret: str) -> None:
    """Credentials from the environment only: no profile, config file or instance role."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def admin(endpoint: str) -> Any:
    """A plain boto3 client, to look behind the store's back."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key=SECRET)


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"devline-{uuid.uuid4().hex[:16]}"
    admin(s3_endpoint).create_bucket(Bucket=name)
    return name


@dataclass
class Backend:
    store: ArtifactStore
    overwrite: Callable[[str, bytes], None]  # replace what is stored under a digest
    count: Callable[[], int]  # objects stored


def local_backend(root: Path) -> Backend:
    store = LocalArtifactStore(root)

    def overwrite(digest: str, data: bytes) -> None:
        path = store.path_for(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return Backend(store, overwrite, lambda: sum(1 for p in root.rglob("*") if p.is_file()))


def s3_backend(endpoint: str, bucket: str, prefix: str = "team/devline/") -> Backend:
    store = S3ArtifactStore.from_url(f"s3://{bucket}/{prefix}?endpoint={endpoint}")
    client = admin(endpoint)

    def overwrite(digest: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=store.key_for(digest), Body=data)

    def count() -> int:
        return int(client.list_objects_v2(Bucket=bucket).get("KeyCount", 0))

    return Backend(store, overwrite, count)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path / "artifacts")
    return s3_backend(request.getfixturevalue("s3_endpoint"), request.getfixturevalue("bucket"))


# --- the same behaviour from both backends ------------------------------------------------


def test_round_trip(backend: Backend) -> None:
    data = b"print('hello')\n"
    digest = asyncio.run(backend.store.put(data))
    assert digest == sha256(data)
    assert asyncio.run(backend.store.get(digest)) == data


def test_put_is_idempotent(backend: Backend) -> None:
    async def twice() -> tuple[str, str]:
        return await backend.store.put(b"same"), await backend.store.put(b"same")

    first, second = asyncio.run(twice())
    assert first == second == sha256(b"same")
    assert backend.count() == 1
    assert asyncio.run(backend.store.get(first)) == b"same"


def test_missing_is_none(backend: Backend) -> None:
    assert asyncio.run(backend.store.get(sha256(b"never stored"))) is None


def test_refs_point_at_digests_and_refuse_other_names(backend: Backend) -> None:
    """Cache keys are refs: any process of the cluster reads what another wrote."""
    name, first, second = sha256(b"cache key"), sha256(b"v1"), sha256(b"v2")

    async def go() -> tuple[str | None, str | None, str | None]:
        missing = await backend.store.get_ref(name)
        await backend.store.put_ref(name, first)
        await backend.store.put_ref(name, first)  # idempotent
        got = await backend.store.get_ref(name)
        await backend.store.put_ref(name, second)  # a later result replaces it
        return missing, got, await backend.store.get_ref(name)

    assert asyncio.run(go()) == (None, first, second)
    with pytest.raises(ArtifactError):
        asyncio.run(backend.store.put_ref("../escape", first))
    with pytest.raises(ArtifactError):
        asyncio.run(backend.store.put_ref(name, "not a digest"))


def test_empty_content(backend: Backend) -> None:
    digest = asyncio.run(backend.store.put(b""))
    assert asyncio.run(backend.store.get(digest)) == b""


@pytest.mark.parametrize("replacement", [b"tampered!", b"tampered", b""],
                         ids=["longer", "same-length", "empty"])
def test_tampered_is_none_and_put_repairs_it(backend: Backend, replacement: bytes) -> None:
    data = b"original"
    digest = asyncio.run(backend.store.put(data))
    backend.overwrite(digest, replacement)
    assert asyncio.run(backend.store.get(digest)) is None
    if len(replacement) != len(data) or isinstance(backend.store, S3ArtifactStore):
        # Both replace an object of another length; S3 also one without its sha256 mark.
        asyncio.run(backend.store.put(data))
        assert asyncio.run(backend.store.get(digest)) == data


def test_large_object(backend: Backend) -> None:
    data = os.urandom(5 * 1024 * 1024)
    digest = asyncio.run(backend.store.put(data))
    assert asyncio.run(backend.store.get(digest)) == data


def test_concurrent_puts_of_the_same_bytes(backend: Backend) -> None:
    data = os.urandom(256 * 1024)

    async def many() -> list[str]:
        return await asyncio.gather(*(backend.store.put(data) for _ in range(16)))

    assert set(asyncio.run(many())) == {sha256(data)}
    assert backend.count() == 1
    assert asyncio.run(backend.store.get(sha256(data))) == data


def test_concurrent_puts_of_different_bytes(backend: Backend) -> None:
    blobs = [f"file {i}\n".encode() * (i + 1) for i in range(20)]

    async def many() -> list[str]:
        return await asyncio.gather(*(backend.store.put(b) for b in blobs))

    digests = asyncio.run(many())
    assert digests == [sha256(b) for b in blobs]
    assert backend.count() == len(blobs)

    async def read_all() -> list[bytes | None]:
        return await asyncio.gather(*(backend.store.get(d) for d in digests))

    assert asyncio.run(read_all()) == blobs


@pytest.mark.parametrize("digest", ["", "abc", "../" * 21 + "x", "A" * 64, "g" * 64])
def test_not_a_digest(backend: Backend, digest: str) -> None:
    with pytest.raises(ArtifactError, match="not a sha256"):
        asyncio.run(backend.store.get(digest))


# --- S3 specifics --------------------------------------------------------------------------


def test_s3_layout_under_prefix(s3_endpoint: str, bucket: str) -> None:
    digest = asyncio.run(s3_backend(s3_endpoint, bucket, "a/b/").store.put(b"x"))
    keys = [o["Key"] for o in admin(s3_endpoint).list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"a/b/sha256/{digest[:2]}/{digest}"]


def test_s3_layout_without_prefix(s3_endpoint: str, bucket: str) -> None:
    store = S3ArtifactStore.from_url(f"s3://{bucket}?endpoint={s3_endpoint}")
    digest = asyncio.run(store.put(b"x"))
    keys = [o["Key"] for o in admin(s3_endpoint).list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"sha256/{digest[:2]}/{digest}"]


def test_s3_put_of_stored_bytes_sends_nothing(s3_endpoint: str, bucket: str) -> None:
    """A redone effect does not PUT again: in a versioned bucket it adds no version."""
    client = admin(s3_endpoint)
    client.put_bucket_versioning(Bucket=bucket,
                                 VersioningConfiguration={"Status": "Enabled"})
    store = s3_backend(s3_endpoint, bucket).store
    for _ in range(3):
        asyncio.run(store.put(b"once"))
    versions = client.list_object_versions(Bucket=bucket).get("Versions", [])
    assert len(versions) == 1


def test_s3_missing_bucket_is_a_clear_error(s3_endpoint: str) -> None:
    store = S3ArtifactStore.from_url(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}"
                                     f"?endpoint={s3_endpoint}")
    with pytest.raises(ArtifactError) as put_err:
        asyncio.run(store.put(b"data"))
    with pytest.raises(ArtifactError) as get_err:
        asyncio.run(store.get(sha256(b"data")))
    for err in (put_err.value, get_err.value):
        assert store.location.bucket in str(err)
        assert s3_endpoint in str(err)
        assert "does not exist" in str(err)
        assert err.retryable  # the record waits for the bucket; it is never dead-lettered


def test_s3_bad_credentials_are_a_clear_error(s3_endpoint: str, bucket: str) -> None:
    from moto.core.authorization import enable_iam_authentication

    store = s3_backend(s3_endpoint, bucket).store
    with enable_iam_authentication(), pytest.raises(ArtifactError) as err:
        asyncio.run(store.put(b"data"))
    message = str(err.value)
    assert bucket in message and s3_endpoint in message
    assert "InvalidAccessKeyId" in message and "credentials" in message
    assert SECRET not in message


def test_s3_no_credentials_is_a_clear_error(s3_endpoint: str, bucket: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = s3_backend(s3_endpoint, bucket).store
    with pytest.raises(ArtifactError, match="no usable AWS credentials") as err:
        asyncio.run(store.get(sha256(b"data")))
    assert bucket in str(err.value) and s3_endpoint in str(err.value)


def test_s3_unreachable_endpoint_is_retryable(bucket: str) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    store = S3ArtifactStore.from_url(f"s3://{bucket}?endpoint={endpoint}")
    started = time.monotonic()
    with pytest.raises(ArtifactError) as err:
        asyncio.run(store.put(b"data"))
    assert err.value.retryable
    assert endpoint in str(err.value) and bucket in str(err.value)
    assert time.monotonic() - started < 30


# --- settings choose the backend -----------------------------------------------------------


def test_settings_default_to_the_local_directory(tmp_path: Path) -> None:
    store = Settings.from_env({}, data_dir=tmp_path).artifact_store()
    assert isinstance(store, LocalArtifactStore)
    assert store.root == tmp_path / "artifacts"
    assert Settings.from_env({}, artifact_dir=tmp_path / "a").artifacts() == tmp_path / "a"


def test_settings_choose_s3_from_the_url(s3_endpoint: str, bucket: str) -> None:
    settings = Settings.from_env(
        {"DEVLINE_ARTIFACT_URL": f"s3://{bucket}/runs/7?endpoint={s3_endpoint}&region=eu-1"})
    store = settings.artifact_store()
    assert isinstance(store, S3ArtifactStore)
    assert store.location == S3Location(bucket, "runs/7/", s3_endpoint, "eu-1", "path")
    digest = asyncio.run(store.put(b"via settings"))
    assert asyncio.run(settings.artifact_store().get(digest)) == b"via settings"
    with pytest.raises(ConfigError, match="artifact_store"):
        settings.artifacts()  # a local store now would not be the cluster's


def test_s3_url_without_endpoint_is_aws() -> None:
    loc = S3Location.parse("s3://my.bucket-1/x/")
    assert loc == S3Location("my.bucket-1", "x/", None, None, "auto")
    assert loc.where == "bucket 'my.bucket-1' at AWS S3"


@pytest.mark.parametrize("url, complaint", [
    ("gs://bucket/x", "s3://bucket"),
    ("/var/artifacts", "DEVLINE_ARTIFACT_DIR"),
    ("s3://", "not an S3 bucket name"),
    ("s3://Upper_Case", "not an S3 bucket name"),
    ("s3://bucket:9000/x", "not an S3 bucket name"),
    ("s3://bucket/a//b", "prefix"),
    ("s3://bucket/../b", "prefix"),
    ("s3://bucket?endpoint=ftp://host", "endpoint must be http"),
    ("s3://bucket?endpoint=http://host:99999", "bad port"),
    ("s3://bucket?endpoint=localhost:9000", "endpoint must be http"),
    ("s3://bucket?region=a%20b", "not a region"),
    ("s3://bucket?addressing=sideways", "addressing"),
    ("s3://bucket?endpont=http://host", "unknown option 'endpont'"),
    ("s3://bucket?region=a&region=b", "given twice"),
])
def test_bad_urls_are_config_errors(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"DEVLINE_ARTIFACT_URL": url})
    assert "DEVLINE_ARTIFACT_URL" in str(err.value)
    assert complaint in str(err.value)


@pytest.mark.parametrize("url", [
    f"s3://AKIAEXAMPLE:{SECRET}@bucket/x",
    f"s3://bucket/x?endpoint=http://minio:{SECRET}@host:9000",
])
def test_credentials_in_the_url_are_refused_unechoed(url: str) -> None:
    with pytest.raises(ConfigError, match="credentials") as err:
        Settings.from_env({"DEVLINE_ARTIFACT_URL": url})
    assert SECRET not in str(err.value)


def test_one_store_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set one"):
        Settings.from_env({"DEVLINE_ARTIFACT_DIR": str(tmp_path),
                           "DEVLINE_ARTIFACT_URL": "s3://bucket"})
