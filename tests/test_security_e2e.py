"""End to end over SCRAM-SHA-512 + TLS (and a client certificate): the secure local broker
(`scripts/kafka-local start --secure`, its own port and data folder), a plan through the
whole pipeline, the errors a wrong password or an untrusted CA give, and no secret in any
log line or child process argv."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devline.settings import Settings
from devline.supervisor import child_env
from tests.harness import running_pipeline, submit, wait_for

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "kafka-local"
PORT = 19393
STATE = ROOT / ".cache" / "kafka-secure-test"


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1)
             for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[dict[str, str]]:
    """The secure node for this module: started by the script, stopped afterwards. Returns
    the DEVLINE_* variables it printed plus the mTLS ones."""
    env = {**os.environ, "DEVLINE_KAFKA_PORT": str(PORT), "DEVLINE_KAFKA_DATA": str(STATE)}
    started = time.monotonic()
    proc = subprocess.run([str(SCRIPT), "start", "--secure"], env=env, capture_output=True,
                          text=True, timeout=240)
    if proc.returncode != 0:
        pytest.fail(f"scripts/kafka-local start --secure failed:\n{proc.stderr}")
    print(f"secure broker up in {time.monotonic() - started:.1f}s")
    printed = {line.split("=", 1)[0].removeprefix("export "): line.split("=", 1)[1]
               for line in proc.stdout.splitlines() if line.startswith("export ")}
    try:
        yield {**printed, **_env_file(STATE / "mtls.env")}
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)


def _settings(client: dict[str, str], tmp_path: Path, **overrides: str) -> Settings:
    values = {k: v for k, v in client.items() if k.startswith("DEVLINE_")}
    return Settings.from_env(values, topic_prefix=f"s{uuid.uuid4().hex[:10]}.",
                             event_partitions=2, work_partitions=2,
                             workspace=tmp_path / "out", data_dir=tmp_path / "data",
                             **overrides)


@pytest.fixture
def secure(secure_broker: dict[str, str], tmp_path: Path) -> Iterator[Settings]:
    """SASL_SSL + SCRAM-SHA-512 + client certificate, own topics (deleted afterwards)."""
    from streams.topics import create_topics, delete_prefixed_topics

    settings = _settings(secure_broker, tmp_path)
    asyncio.run(create_topics(settings))
    yield settings
    try:
        asyncio.run(delete_prefixed_topics(settings))
    except Exception as exc:  # cleanup only
        print(f"could not delete topics under {settings.topic_prefix}: {exc}")


def _descendants(pid: int) -> list[list[str]]:
    """argv of every live process below `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent:
                frontier.append(child)
                try:
                    raw = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                found.append([a.decode(errors="replace") for a in raw.split(b"\0") if a])
    return found


def test_a_plan_runs_over_sasl_ssl_with_mtls_and_no_secret_leaks(
        secure: Settings, secure_broker: dict[str, str], tmp_path: Path) -> None:
    settings = secure
    assert settings.ssl_certfile and settings.ssl_key_password  # mTLS on top of SCRAM
    files = [{"path": "app/a.py", "content": "A = 1\n"},
             {"path": "app/b.py", "content": "from app.a import A\nB = A + 1\n"},
             {"path": "app/c.py", "content": "from app.b import B\nC = B + 1\n"}]
    for f in files:
        f["simulate"] = {"duration_s": 0.05}
    log = tmp_path / "run.log"
    started = time.monotonic()
    with running_pipeline(settings, workers=1, log=log, test_workers=0) as proc:
        plan_id = submit(settings, {"project": "sec", "name": "secure", "files": files})
        kind, done = wait_for(settings, plan_id, {"PlanCompleted", "PlanRejected"}, 90)
        argvs = _descendants(proc.pid)
        argvs.append(Path(f"/proc/{proc.pid}/cmdline").read_text().split("\0"))
    print(f"secure plan done in {time.monotonic() - started:.1f}s (pipeline start included)")
    assert kind == "PlanCompleted", done
    assert done["files"] == 3 and done["executor_runs"] == 3
    roles = {a[3] for a in argvs if a[1:3] == ["-m", "devline"] and len(a) > 3}
    assert {"run", "processor", "worker", "sink"} <= roles, argvs
    secrets = settings.secrets()
    assert len(secrets) == 2  # the SASL password and the client key's password
    for argv in argvs:
        for secret in secrets:
            assert secret not in " ".join(argv), f"a secret in the argv of {argv[:4]}"
    text = log.read_text()
    for secret in secrets:
        assert secret not in text
    # Kafka's own tools work against the secure node (the script adds the client config).
    env = {**os.environ, "DEVLINE_KAFKA_PORT": str(PORT), "DEVLINE_KAFKA_DATA": str(STATE)}
    tools = subprocess.run([str(SCRIPT), "tools", "topics", "--list"], env=env,
                           capture_output=True, text=True, timeout=240)
    assert tools.returncode == 0, tools.stderr
    assert settings.topic("devline.events") in tools.stdout.split()
    for secret in secrets:
        assert secret not in tools.stdout + tools.stderr


def _cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**child_env(settings), **env}
    return subprocess.run([sys.executable, "-m", "devline", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120)


def test_a_wrong_password_says_authentication_failed(secure_broker: dict[str, str],
                                                      tmp_path: Path) -> None:
    wrong = "not-the-password-" + uuid.uuid4().hex[:6]
    settings = _settings(secure_broker, tmp_path, sasl_password=wrong)
    proc = _cli(settings, "topics", "create")
    assert proc.returncode == 1, proc.stderr
    assert "authentication failed at 127.0.0.1:19393 (SCRAM-SHA-512 as user 'devline')" in (
        proc.stderr), proc.stderr
    assert "Is a broker running" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("error:") == 1, proc.stderr
    assert wrong not in proc.stderr + proc.stdout


def test_tls_trusts_the_system_store_when_no_ca_file_is_set(
        secure: Settings, secure_broker: dict[str, str]) -> None:
    settings = secure
    no_ca = {k: v for k, v in child_env(settings).items() if k != "DEVLINE_SSL_CAFILE"}
    no_ca.pop("SSL_CERT_FILE", None)
    untrusted = subprocess.run([sys.executable, "-m", "devline", "status"], cwd=ROOT,
                               env=no_ca, capture_output=True, text=True, timeout=120)
    assert untrusted.returncode == 1
    assert "certificate verify failed" in untrusted.stderr, untrusted.stderr
    assert "not trusted by the system trust store: set DEVLINE_SSL_CAFILE" in untrusted.stderr
    # The same CA in the system store (OpenSSL's SSL_CERT_FILE) is enough.
    trusted = subprocess.run([sys.executable, "-m", "devline", "status"], cwd=ROOT,
                             env={**no_ca, "SSL_CERT_FILE": secure_broker[
                                 "DEVLINE_SSL_CAFILE"]},
                             capture_output=True, text=True, timeout=120)
    assert trusted.returncode == 0, trusted.stderr
    assert "no plans in the event log" in trusted.stdout + trusted.stderr
