"""A whole plan with every process on an S3-protocol artifact store (moto's server on
loopback): briefs, outputs and the plan's files go by hash through the bucket, nothing
through a local directory."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import server as moto_server

from devline.settings import Settings
from streams import claims
from streams.client import publish_plan
from tests.harness import events, running_pipeline, wait_for
from tests.test_artifacts_s3 import isolate_aws_env
from tests.test_claims_e2e import BIG_OUTPUT, plan

SECRET = "s3-e2e-secret"  # noqa: S105 - moto accepts any; never a real one


@pytest.fixture
def s3_settings(topics: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                ) -> Iterator[tuple[Settings, object, str]]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    isolate_aws_env(monkeypatch, tmp_path, SECRET)
    bucket = f"devline-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key=SECRET)
    s3.create_bucket(Bucket=bucket)
    try:
        yield (topics.updated(artifact_url=f"s3://{bucket}/run?endpoint={endpoint}"), s3,
               bucket)
    finally:
        server.stop()


def test_every_process_reads_and_writes_contents_through_the_bucket(
        s3_settings: tuple[Settings, object, str], monkeypatch: pytest.MonkeyPatch) -> None:
    settings, s3, bucket = s3_settings
    record = plan("s3-1")
    monkeypatch.setattr(claims, "PLAN_INLINE_MAX_BYTES", 100)  # the plan's files by hash too
    with running_pipeline(settings, workers=1):
        asyncio.run(publish_plan(settings, record))
        kind, _ = wait_for(settings, "s3-1", {"PlanCompleted", "PlanRejected"}, 90)
        assert kind == "PlanCompleted"
        target = settings.workspace / "claims" / "pkg" / "base.py"
        deadline = time.monotonic() + 30
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    for f in record["files"]:
        assert (settings.workspace / "claims" / f["path"]).read_text() == f["content"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}  # type: ignore[attr-defined]
    big = hashlib.sha256(BIG_OUTPUT.encode()).hexdigest()
    accepted = next(v for _, et, v in events(settings) if et == "PlanAccepted")
    brief = next(t["brief"] for t in accepted["tasks"] if t["path"] == "pkg/base.py")
    assert f"run/sha256/{big[:2]}/{big}" in keys  # the output the worker stored
    assert f"run/sha256/{brief[:2]}/{brief}" in keys  # the brief the planner stored
    assert len(keys) >= 4  # + the plan's files, the small outputs
    assert not (settings.data_dir / "artifacts").exists()  # nothing went to a local dir
