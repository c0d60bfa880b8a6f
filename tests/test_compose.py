"""docker-compose.yml wires Kafka, the registry, Kafka UI and devline consistently."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from devline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(compose["services"])


def _listeners(value: str) -> dict[str, str]:
    """`NAME://host:port,...` as {NAME: host:port}."""
    pairs = (item.strip().split("://", 1) for item in value.split(","))
    return {name: address for name, address in pairs}


def _kafka_env(services: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in services["kafka"]["environment"].items()}


def _internal(services: dict[str, Any]) -> str:
    env = _kafka_env(services)
    return _listeners(env["KAFKA_ADVERTISED_LISTENERS"])[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]


def _host_port(mapping: str) -> tuple[str, int]:
    """`[ip:]host_port:container_port` -> (published address, container port)."""
    *published, container = mapping.split(":")
    return ":".join(published), int(container)


def _published(service: dict[str, Any]) -> dict[int, str]:
    return {port: published for published, port in map(_host_port, service["ports"])}


def test_the_four_services_exist(services: dict[str, Any]) -> None:
    assert {"kafka", "schema-registry", "kafka-ui", "devline"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["schema-registry"]["image"].startswith("confluentinc/cp-schema-registry:")
    assert services["kafka-ui"]["image"].startswith("kafbat/kafka-ui:")
    assert services["devline"]["build"]["dockerfile"] == "Dockerfile"


def test_kafka_is_a_single_kraft_node(services: dict[str, Any]) -> None:
    env = _kafka_env(services)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in _listeners(env["KAFKA_LISTENERS"])
    assert controller not in _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    port = _listeners(env["KAFKA_LISTENERS"])[controller].rpartition(":")[2]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:{port}"


def test_host_listener_is_the_settings_default_bootstrap(services: dict[str, Any]) -> None:
    env = _kafka_env(services)
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    internal = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    (host_name,) = set(advertised) - {internal}
    assert advertised[host_name] == Settings.from_env({}).bootstrap == "127.0.0.1:9092"
    port = int(advertised[host_name].rpartition(":")[2])
    assert _published(services["kafka"])[port] == f"127.0.0.1:{port}"
    assert _listeners(env["KAFKA_LISTENERS"])[host_name] == f":{port}"
    assert advertised[internal] == "kafka:29092"


def test_ports(services: dict[str, Any]) -> None:
    assert 9092 in _published(services["kafka"])
    assert _published(services["schema-registry"]) == {8081: "127.0.0.1:8081"}
    assert _published(services["kafka-ui"]) == {8080: "127.0.0.1:8080"}


def test_everything_in_compose_uses_the_internal_listener(services: dict[str, Any]) -> None:
    internal = _internal(services)
    assert services["devline"]["environment"]["DEVLINE_BOOTSTRAP"] == internal
    assert services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == internal
    store = services["schema-registry"]["environment"][
        "SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"
    ]
    assert [_listeners(item)["PLAINTEXT"] for item in store.split(",")] == [internal]


@pytest.mark.parametrize(
    ("service", "variable"),
    [("kafka-ui", "KAFKA_CLUSTERS_0_SCHEMAREGISTRY"), ("devline", "DEVLINE_REGISTRY_URL")],
)
def test_registry_urls_point_at_the_registry_service(
    services: dict[str, Any], service: str, variable: str
) -> None:
    url = urlsplit(services[service]["environment"][variable])
    registry_env = services["schema-registry"]["environment"]
    listen_port = urlsplit(registry_env["SCHEMA_REGISTRY_LISTENERS"]).port
    assert url.scheme == "http"
    assert url.hostname == "schema-registry" == registry_env["SCHEMA_REGISTRY_HOST_NAME"]
    assert url.port == listen_port == 8081


def test_services_wait_for_their_dependencies(services: dict[str, Any]) -> None:
    for name in ("schema-registry", "kafka-ui", "devline"):
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("kafka-ui", "devline"):
        assert services[name]["depends_on"]["schema-registry"]["condition"] == "service_healthy"


def test_dockerfile_installs_the_package_and_runs_devline() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert "FROM python:3.11-slim" in lines
    assert any(line.startswith("RUN pip install .") for line in lines)
    assert 'CMD ["devline", "run"]' in lines
