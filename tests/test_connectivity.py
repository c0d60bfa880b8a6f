"""Security settings and connection errors without a secure broker: validation, the cause
of a failed connection (pure, then probed against real addresses), redaction of secrets,
and a schema registry URL with credentials that leaves none in the logs."""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

from devline.connectivity import BROKER_HINT, Cause, Diagnosis, classify, probe, redact
from devline.errors import ConfigError
from devline.settings import Settings
from tests.samples import sample_event

ROOT = Path(__file__).resolve().parents[1]
SASL = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "alice", "sasl_password": "pw-123"}


@pytest.mark.parametrize(("values", "expected"), [
    ({"security_protocol": "TLS"},
     "DEVLINE_SECURITY_PROTOCOL): must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ({**SASL, "sasl_mechanism": "SCRAM-SHA-1"},
     "DEVLINE_SASL_MECHANISM): must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ({"security_protocol": "SASL_SSL"}, "needs a SASL mechanism: set DEVLINE_SASL_MECHANISM"),
    ({**SASL, "sasl_password": None}, "needs a user name and a password"),
    ({**SASL, "sasl_username": ""}, "needs a user name and a password"),
    ({"sasl_mechanism": "PLAIN"}, "security_protocol is PLAINTEXT: use SASL_SSL"),
    ({"security_protocol": "SSL", "ssl_keyfile": "k.pem"}, "set DEVLINE_SSL_CERTFILE"),
])
def test_bad_security_settings_name_the_allowed_values(values: dict[str, Any],
                                                       expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({}, **values)
    assert expected in str(info.value)
    assert "pw-123" not in str(info.value)


def test_protocol_and_mechanism_are_case_insensitive() -> None:
    s = Settings.from_env({"DEVLINE_SECURITY_PROTOCOL": "sasl_ssl",
                           "DEVLINE_SASL_MECHANISM": "scram-sha-256",
                           "DEVLINE_SASL_USERNAME": "a", "DEVLINE_SASL_PASSWORD": "b"})
    assert (s.security_protocol, s.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")


def test_tls_without_a_ca_file_uses_the_system_trust_store() -> None:
    s = Settings.from_env({}, **SASL)
    ctx = s.kafka_common()["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    conf = s.confluent_common()
    assert conf["ssl.ca.location"] == "probe"
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert Settings.from_env({}, security_protocol="SSL",
                             ssl_check_hostname=False).ssl_context().check_hostname is False
    assert Settings.from_env({}).ssl_context() is None  # plaintext: no TLS at all


def test_faust_gets_the_same_credentials_and_tls_context() -> None:
    import faust

    from streams.app import credentials

    s = Settings.from_env({}, **SASL)
    creds = credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.ssl_context is s.ssl_context() and creds.password == "pw-123"  # noqa: S105
    ssl_only = credentials(Settings.from_env({}, security_protocol="SSL"))
    assert isinstance(ssl_only, faust.SSLCredentials)


def test_missing_tls_files_are_config_errors() -> None:
    s = Settings.from_env({}, security_protocol="SSL", ssl_cafile="/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="DEVLINE_SSL_CAFILE: no such file /nonexistent"):
        s.kafka_common()


def test_registry_url_credentials_leave_the_url() -> None:
    s = Settings.from_env({"DEVLINE_REGISTRY_URL": "https://bob:s%40cret@reg.example:8081"})
    assert s.registry_url == "https://reg.example:8081"
    assert s.registry_user == "bob" and s.registry_password is not None
    assert s.registry_password.get_secret_value() == "s@cret"
    assert "s@cret" not in repr(s) and "s%40cret" not in str(s)
    assert s.registry_config() == {"basic.auth.user.info": "bob:s@cret"}
    assert "s@cret" in s.secrets()
    with pytest.raises(ConfigError, match="keep one of them"):
        Settings.from_env({}, registry_url="http://a:b@h:1", registry_user="c")


def test_redact_hides_secrets_and_url_passwords() -> None:
    text = "failed https://bob:hunter2@reg:8081/x with password pw-123 and pw-123"
    assert redact(text, ["pw-123"]) == "failed https://bob:***@reg:8081/x with password *** and ***"


def _raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(("exc", "cause"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Cause.DOWN),
    (OSError(errno.EHOSTUNREACH, "no route"), Cause.DOWN),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Cause.UNRESOLVABLE),
    (ssl.SSLCertVerificationError("certificate verify failed"), Cause.TLS),
    (SaslAuthenticationFailed("invalid credentials"), Cause.AUTH),
    (_raised_from(RuntimeError("wrapped"), SaslAuthenticationFailed("x")), Cause.AUTH),
    (KafkaConnectionError("Connection at 127.0.0.1:9 closed"), Cause.CLOSED),
    (TimeoutError(), Cause.TIMEOUT),
    (ValueError("something else"), None),
])
def test_classify_names_the_cause(exc: BaseException, cause: Cause | None) -> None:
    assert classify(exc) == cause


def test_each_cause_has_its_own_hint() -> None:
    s = Settings.from_env({}, **SASL)
    auth = Diagnosis(Cause.AUTH, "h:1", "invalid credentials").message(s)
    assert auth.startswith("authentication failed at h:1 (SCRAM-SHA-512 as user 'alice')")
    assert "pw-123" not in auth and "Is a broker running" not in auth
    assert BROKER_HINT in Diagnosis(Cause.DOWN, "h:1", "connection refused").message(s)
    untrusted = Diagnosis(Cause.TLS, "h:1", "certificate verify failed: self-signed").message(s)
    assert "not trusted by the system trust store: set DEVLINE_SSL_CAFILE" in untrusted
    assert "DEVLINE_SSL_CHECK_HOSTNAME=false" in Diagnosis(
        Cause.TLS, "h:1", "certificate verify failed: Hostname mismatch").message(s)
    assert "cannot resolve the broker host 'h'" in Diagnosis(
        Cause.UNRESOLVABLE, "h:1", "unknown").message(s)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_probe_names_a_down_broker_an_unknown_host_and_passes_a_live_one(
        kafka_bootstrap: str) -> None:
    down = asyncio.run(probe(Settings(bootstrap=f"127.0.0.1:{closed_port()}")))
    assert down is not None and down.cause is Cause.DOWN
    unknown = asyncio.run(probe(Settings(bootstrap="no-such-broker.invalid:9092")))
    assert unknown is not None and unknown.cause is Cause.UNRESOLVABLE
    # TLS spoken to a plaintext listener: the broker hangs up or the handshake fails.
    tls = asyncio.run(probe(Settings(bootstrap=kafka_bootstrap, security_protocol="SSL")))
    assert tls is not None and tls.cause in (Cause.CLOSED, Cause.TLS)
    assert asyncio.run(probe(Settings(bootstrap=kafka_bootstrap))) is None
    # One bad address of two is no failure: the client bootstraps from the other.
    both = Settings(bootstrap=f"127.0.0.1:{closed_port()},{kafka_bootstrap}")
    assert asyncio.run(probe(both)) is None


def test_cli_reports_an_unresolvable_host_once_with_its_hint(tmp_path: Path) -> None:
    env = {**os.environ, "DEVLINE_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "devline", "--bootstrap",
                           "no-such-broker.invalid:9092", "status", "some-plan"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "cannot resolve the broker host 'no-such-broker.invalid'" in proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr, proc.stderr


class FakeRegistry(BaseHTTPRequestHandler):
    """A schema registry with behaviour: basic auth, register, fetch by id."""

    schemas: ClassVar[list[str]] = []
    auth: ClassVar[list[str]] = []

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        self.auth.append(self.headers.get("Authorization", ""))
        expected = "Basic " + base64.b64encode(b"reg-user:reg-s3cret").decode()
        if self.headers.get("Authorization") != expected:
            self._reply(401, {"error_code": 401, "message": "Unauthorized"})
            return False
        return True

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self._authorized():
            if body["schema"] not in self.schemas:
                self.schemas.append(body["schema"])
            self._reply(200, {"id": self.schemas.index(body["schema"]) + 1})

    def do_GET(self) -> None:
        if self._authorized():
            schema_id = int(self.path.split("?")[0].rstrip("/").split("/")[-1])
            self._reply(200, {"schema": self.schemas[schema_id - 1]})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_registry_credentials_in_the_url_reach_the_registry_and_no_log(
        registry: str, caplog: pytest.LogCaptureFixture) -> None:
    from schemas.codec import Codec

    url = f"http://reg-user:reg-s3cret@{registry}"
    settings = Settings.from_env({"DEVLINE_REGISTRY_URL": url})
    # Every library's lines, the registry client's (httpx2) included, whatever level an
    # earlier test's setup_logging left on its logger.
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="httpx2"):
        codec = Codec.from_settings(settings)
        data = codec.encode("MetricPoint", sample_event("MetricPoint"))
        assert data[0] == 0  # Confluent framing: the registry gave an id
        fresh = Codec.from_settings(settings)  # a reader that must fetch the schema
        assert fresh.decode(data)[0] == "MetricPoint"
    expected = "Basic " + base64.b64encode(b"reg-user:reg-s3cret").decode()
    assert FakeRegistry.auth and set(FakeRegistry.auth) == {expected}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert registry in logged  # httpx did log its requests at DEBUG ...
    assert "reg-s3cret" not in logged  # ... without the password


def test_http_request_lines_are_quiet_at_info() -> None:
    from devline.cli.common import setup_logging

    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    try:
        setup_logging("INFO")
        for name in ("httpx", "httpx2"):  # the registry client's, old and new releases
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    finally:
        root.setLevel(before[0])
        root.handlers[:] = before[1]
