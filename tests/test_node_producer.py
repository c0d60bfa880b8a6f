"""The wire format from another language: examples/node-producer (avsc + kafkajs) submits
plans that devline decodes, accepts or rejects, runs and writes, and reads the answers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from fake_registry import serving
from samples import mock_registry

from agents.planning import plan_record
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import send_raw
from tests.harness import raw_records, running_pipeline

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "node-producer"

# Node is on every machine we run on: a missing one fails here with the reason.
NODE = shutil.which("node") or ""
NPM = shutil.which("npm") or ""
assert NODE, "node is not installed: the Node producer example needs Node 18+"
assert NPM, "npm is not installed: the Node producer example needs it"

PLAN: dict[str, object] = {
    "project": "fromnode",
    "name": "written from Node",
    "files": [
        {"path": "pkg/a.py", "content": "A = 1\n", "simulate": {"duration_s": 0.1}},
        {"path": "pkg/b.py", "content": "from pkg.a import A\n\nB = A + 1\n", "cost": 2},
    ],
}


@pytest.fixture(scope="module")
def node_producer() -> Path:
    """The example with its locked dependencies (`npm ci` only when the lock changed; the
    packages are cached under .cache/npm, as scripts/bootstrap installs them)."""
    installed = EXAMPLE / "node_modules" / ".package-lock.json"
    lock = EXAMPLE / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        npm = [NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline",
               "--cache", str(ROOT / ".cache" / "npm")]
        proc = subprocess.run(npm, cwd=EXAMPLE, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"npm ci failed in {EXAMPLE}:\n{proc.stderr}"
    return EXAMPLE / "producer.js"


def node(script: Path, *args: str, env: Mapping[str, str] | None = None,
         timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVLINE_")}
    return subprocess.run([NODE, str(script), *args], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def plan_file(tmp_path: Path, name: str, plan: Mapping[str, object]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(plan), encoding="utf-8")
    return path


def test_node_fingerprints_and_encoding_are_the_codecs(node_producer: Path,
                                                       tmp_path: Path) -> None:
    codec = Codec()
    listing = ("const w = require('./wire'); const fs = require('fs');"
               "console.log('int', w.crc64Avro('\"int\"').toString('hex'));"
               "for (const f of fs.readdirSync(process.argv[1])) if (f.endsWith('.avsc')) {"
               " const t = w.loadEventType(process.argv[1], f);"
               " console.log(t.type.name.split('.').pop(), t.fingerprint.toString('hex')); }")
    proc = subprocess.run([NODE, "-e", listing, str(ROOT / "schemas")], cwd=EXAMPLE,
                          capture_output=True, text=True, timeout=30, check=True)
    from_node = dict(line.split() for line in proc.stdout.splitlines())
    # The Avro spec's test vector: "int" -> 8247732601305521295, little-endian on the wire.
    assert from_node.pop("int") == (8247732601305521295).to_bytes(8, "little").hex()
    assert from_node == {t: codec.fingerprint(t).hex() for t in codec.event_types}

    out = node(node_producer, str(plan_file(tmp_path, "p.json", {**PLAN, "plan_id": "n1"})),
               "--dry-run")
    assert out.returncode == 0, out.stderr
    event_type, record = codec.decode(bytes.fromhex(out.stdout.strip()))
    assert event_type == "PlanSubmitted"
    assert record["plan_id"] == "n1" and record["submitted_by"] == "node-producer"
    assert [f["path"] for f in record["files"]] == ["pkg/a.py", "pkg/b.py"]
    assert record["files"][0]["simulate"]["fail_error"] == "simulated failure"  # a default
    assert record["files"][1]["cost"] == 2.0


def test_bad_input_and_an_unreachable_registry_are_refused_with_the_reason(node_producer: Path,
                                                              tmp_path: Path) -> None:
    bad = node(node_producer, str(plan_file(tmp_path, "bad.json", {"files": [{"path": 3}]})),
               "--dry-run")
    assert bad.returncode == 1 and "does not match" in bad.stderr and "path" in bad.stderr
    usage = node(node_producer, "--timeout", "0", "x.json")
    assert usage.returncode == 1 and "--timeout must be a positive" in usage.stderr
    # A registry that does not answer: one line naming it, exit 4, no password shown.
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = node(node_producer, str(plan_file(tmp_path, "p.json", PLAN)),
                    env={"DEVLINE_REGISTRY_URL": f"http://reader:s3cret@127.0.0.1:{port}"})
    assert registry.returncode == 4, registry.stderr
    assert registry.stderr.strip() == \
        f"error: schema registry at http://127.0.0.1:{port} unreachable: ECONNREFUSED"


def test_a_plan_submitted_from_node_is_rejected_or_completed_and_written(
        node_producer: Path, topics: Settings, tmp_path: Path) -> None:
    settings = topics
    env = {"DEVLINE_BOOTSTRAP": settings.bootstrap, "DEVLINE_TOPIC_PREFIX": settings.topic_prefix}
    bad = plan_file(tmp_path, "bad.json", {**PLAN, "plan_id": "node-bad",
                                           "project": "../escaped"})
    good = plan_file(tmp_path, "good.json", {**PLAN, "plan_id": "node-good"})
    # A producer with a registry, in a cluster without one: its records cannot be read.
    framed = Codec(registry_client=mock_registry()).encode(
        "PlanSubmitted", plan_record({**PLAN, "plan_id": "framed"}))
    log = tmp_path / "run.log"
    with running_pipeline(settings, workers=1, log=log):
        rejected = node(node_producer, str(bad), "--timeout", "90", env=env)  # + start-up
        done = node(node_producer, str(good), "--timeout", "60", env=env)
        for _ in range(2):
            asyncio.run(send_raw(settings, settings.topic(T.PLANS), b"framed", framed, []))
        letters = wait_for_dead_letters(settings, 2)
    assert rejected.returncode == 1, rejected.stdout + rejected.stderr
    assert "rejected:" in rejected.stdout and "project" in rejected.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "node-good"
    assert "accepted: 2 files, critical path 2" in lines
    assert "plan node-good done: 2 files" in done.stdout and lines[-1] == "files written"
    out = settings.workspace / "fromnode" / "pkg"
    assert (out / "a.py").read_text() == "A = 1\n"
    assert (out / "b.py").read_text() == "from pkg.a import A\n\nB = A + 1\n"
    # What the example put on the plans topic: keyed by plan id, with devline's headers.
    sent = {r.key: r for r in raw_records(settings, T.PLANS)}
    headers = dict(sent[b"node-good"].headers)
    assert headers == {"event-type": b"PlanSubmitted", "plan-id": b"node-good",
                       "trace-id": b"node-good"}
    # Refused (dead-lettered, saying why), and the mismatch is logged once, not per record.
    for letter in letters:
        assert "no schema registry is configured" in dict(letter.headers)["dlq-reason"].decode()
    assert log.read_text().count("read a Confluent-framed record") == 1


def wait_for_dead_letters(settings: Settings, count: int, within: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        letters = raw_records(settings, T.DLQ, idle=0.3)
        if len(letters) >= count:
            return letters
        time.sleep(0.3)
    raise AssertionError(f"fewer than {count} dead letters within {within:g}s")


def test_with_a_registry_node_writes_and_reads_confluent_framing(
        node_producer: Path, topics: Settings, tmp_path: Path) -> None:
    good = plan_file(tmp_path, "good.json", {**PLAN, "plan_id": "node-registry",
                                             "project": "viaregistry"})
    with serving(auth=("reader", "s3cret")) as (url, registry):
        settings = topics.model_copy(update={"registry_url": url.replace(
            "http://", "http://reader:s3cret@")})
        env = {"DEVLINE_BOOTSTRAP": settings.bootstrap,
               "DEVLINE_TOPIC_PREFIX": settings.topic_prefix,
               "DEVLINE_REGISTRY_URL": str(settings.registry_url)}
        with running_pipeline(settings, workers=1):
            done = node(node_producer, str(good), "--timeout", "90", env=env)
        sent = {r.key: r for r in raw_records(settings, T.PLANS)}
    assert done.returncode == 0, done.stdout + done.stderr
    assert "plan node-registry done: 2 files" in done.stdout
    assert done.stdout.splitlines()[-1] == "files written"
    assert (settings.workspace / "viaregistry" / "pkg" / "a.py").read_text() == "A = 1\n"
    # Confluent framing (00 + schema id), the schema under its full name, answers read
    # back by id: the pipeline's own records went through the registry too.
    value = sent[b"node-registry"].value
    assert value[0] == 0 and int.from_bytes(value[1:5], "big") in registry.ids.values()
    assert ("POST", "/subjects/dev.devline.PlanSubmitted/versions") in registry.requests
    assert any(m == "GET" and p.startswith("/schemas/ids/") for m, p in registry.requests)
