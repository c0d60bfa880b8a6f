"""Shared fixtures: one real Kafka broker per session, uuid-named topics per test."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        docker = ["docker", "info"]  # from PATH, like a user's shell
        return subprocess.run(docker, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session", autouse=True)
def _no_pipeline_left_behind() -> Iterator[None]:
    """Whatever a test did, no `devline run` it started outlives the session."""
    from devline.launch import kill_all

    yield
    if kill_all():
        print("killed pipeline process groups left behind by interrupted tests")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real broker: DEVLINE_BOOTSTRAP, else testcontainers, else scripts/kafka-local."""
    if os.environ.get("DEVLINE_BOOTSTRAP"):
        yield os.environ["DEVLINE_BOOTSTRAP"]
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    script = ROOT / "scripts" / "kafka-local"
    started = subprocess.run([str(script), "status"], capture_output=True).returncode != 0
    proc = subprocess.run([str(script), "start"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail("no Kafka broker could be had: scripts/kafka-local start failed:\n"
                    + proc.stderr)
    try:
        yield "127.0.0.1:9092"
    finally:
        if started and not os.environ.get("DEVLINE_KEEP_KAFKA"):
            subprocess.run([str(script), "stop"], capture_output=True)


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings with a uuid topic prefix (own topics and groups) and a private workspace.

    The test's topics are deleted afterwards, so one broker serves the whole session
    without piling up thousands of partitions.
    """
    from streams.topics import delete_prefixed_topics

    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = Settings(
        bootstrap=kafka_bootstrap,
        topic_prefix=prefix,
        work_partitions=12,
        event_partitions=4,
        workspace=tmp_path / "out",
        data_dir=tmp_path / "data",
    )
    yield settings
    try:
        asyncio.run(delete_prefixed_topics(settings))
    except Exception as exc:  # cleanup only: never fail a test for it
        print(f"could not delete topics under {prefix}: {exc}")


@pytest.fixture
def topics(settings: Settings) -> Settings:
    """Like `settings`, with every catalogue topic created."""
    from streams.topics import create_topics

    asyncio.run(create_topics(settings))
    return settings
