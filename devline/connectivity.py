"""Why a connection to Kafka failed, said once, with what to do about it.

The Kafka client only reports "Unable to bootstrap" (the reason goes to its log), so after
a failure `probe` opens one connection per bootstrap address the same way the client does
(TCP, TLS, SASL) and `classify` names the first cause: broker down, host unknown, TLS
refused, authentication failed. `redact` keeps secrets out of whatever is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum

from devline.settings import Settings

BROKER_HINT = "Is a broker running? (scripts/kafka-local start, or set DEVLINE_BOOTSTRAP)"
PROBE_TIMEOUT_S = 5.0


class Cause(StrEnum):
    DOWN = "down"  # nothing listens (refused), or the host cannot be reached
    UNRESOLVABLE = "unresolvable"  # the host name has no address
    TLS = "tls"  # handshake or certificate failure
    AUTH = "auth"  # SASL refused the credentials or the mechanism
    CLOSED = "closed"  # the broker hung up: usually a plaintext client at a TLS/SASL listener
    TIMEOUT = "timeout"  # no answer at all


_AUTH_ERRORS = {"SaslAuthenticationFailed", "AuthenticationFailedError",
                "AuthenticationMethodNotSupported", "UnsupportedSaslMechanismError",
                "IllegalSaslStateError"}
_DOWN_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
                errno.EADDRNOTAVAIL}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def classify(exc: BaseException) -> Cause | None:
    """The cause behind `exc` (or anything it was raised from); None when it says nothing
    about the connection (then only `probe` can tell)."""
    for e in _chain(exc):
        if type(e).__name__ in _AUTH_ERRORS:
            return Cause.AUTH
        if isinstance(e, ssl.SSLError | ssl.CertificateError):
            return Cause.TLS
        if isinstance(e, socket.gaierror):
            return Cause.UNRESOLVABLE
        if isinstance(e, ConnectionRefusedError) or (
                isinstance(e, OSError) and e.errno in _DOWN_ERRNOS):
            return Cause.DOWN
        if isinstance(e, TimeoutError):
            return Cause.TIMEOUT
        if isinstance(e, ConnectionResetError | BrokenPipeError | asyncio.IncompleteReadError):
            return Cause.CLOSED
        if type(e).__name__ == "KafkaConnectionError" and "closed" in str(e).lower():
            return Cause.CLOSED
    return None


@dataclass(frozen=True)
class Diagnosis:
    cause: Cause
    address: str
    detail: str  # what the system, the TLS library or the broker said

    def message(self, settings: Settings) -> str:
        """One line: what failed, where, and what to do."""
        host = self.address.rpartition(":")[0]
        proto = settings.security_protocol
        env = Settings.env_name
        match self.cause:
            case Cause.DOWN:
                return f"no Kafka broker at {self.address} ({self.detail}). {BROKER_HINT}"
            case Cause.UNRESOLVABLE:
                return (f"cannot resolve the broker host {host!r} ({self.detail}). Check the "
                        f"host name in {env('bootstrap')} (host:port,...) and the DNS")
            case Cause.AUTH:
                return (f"authentication failed at {self.address} ({settings.sasl_mechanism} "
                        f"as user {settings.sasl_username!r}): {self.detail}. Check "
                        f"{env('sasl_username')}, {env('sasl_password')} and "
                        f"{env('sasl_mechanism')}")
            case Cause.TLS:
                return f"TLS with {self.address} failed: {self.detail}. {self._tls_hint(settings)}"
            case Cause.CLOSED:
                return (f"{self.address} closed the connection ({self.detail}) while devline "
                        f"spoke {proto}. Does the listener expect another protocol? Set "
                        f"{env('security_protocol')} (SSL, SASL_SSL, ...) to the listener's")
            case Cause.TIMEOUT:
                return (f"no answer from {self.address} within {PROBE_TIMEOUT_S:g}s "
                        f"({self.detail}). A firewall, or a listener that expects another "
                        f"protocol than {proto} ({env('security_protocol')})?")

    def _tls_hint(self, settings: Settings) -> str:
        env = Settings.env_name
        detail = self.detail.lower()
        if "wrong version number" in detail or "record layer failure" in detail:
            return (f"Does this listener speak TLS? If not, set {env('security_protocol')} "
                    f"to PLAINTEXT or SASL_PLAINTEXT")
        if "hostname mismatch" in detail or "doesn't match" in detail or (
                "ip address mismatch" in detail):
            return ("The broker's certificate does not name this host: connect by a name it "
                    f"holds, or set {env('ssl_check_hostname')}=false")
        if "certificate verify failed" in detail:
            where = (f"the CA in {env('ssl_cafile')}" if settings.ssl_cafile
                     else "the system trust store")
            return (f"The broker's certificate is not trusted by {where}: set "
                    f"{env('ssl_cafile')} to the CA that signed it")
        if "certificate required" in detail or "bad certificate" in detail or (
                "unknown ca" in detail):
            return (f"The broker refused the client certificate: set {env('ssl_certfile')} "
                    f"and {env('ssl_keyfile')} to one its CA signed")
        return f"Check {env('ssl_cafile')} and the listener's TLS settings"


def diagnose(exc: BaseException, address: str) -> Diagnosis:
    """A diagnosis of one failed connection attempt to `address`."""
    cause = classify(exc) or Cause.CLOSED
    return Diagnosis(cause, address, _detail(exc))


def _detail(exc: BaseException) -> str:
    for e in _chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {e.verify_message or e}"
        if isinstance(e, ssl.SSLError):
            return e.reason or str(e)
        if isinstance(e, socket.gaierror):
            return e.strerror or str(e)
        if isinstance(e, OSError) and e.errno:
            return os.strerror(e.errno).lower()
        if isinstance(e, ConnectionError | asyncio.IncompleteReadError) or (
                type(e).__name__ == "KafkaConnectionError" and "closed" in str(e)):
            return "connection closed"
    text = str(exc) or type(exc).__name__
    return text.removeprefix("[Error 58] SaslAuthenticationFailed: ").rstrip(".")


async def probe(settings: Settings, within_s: float = PROBE_TIMEOUT_S) -> Diagnosis | None:
    """Connect to each bootstrap address as the Kafka client does (TCP, TLS, SASL); None
    when one of them answers, else the diagnosis of the first failure."""
    from aiokafka.conn import create_conn

    opts = settings.kafka_common()
    first: Diagnosis | None = None
    for hostport in settings.bootstrap.split(","):
        host, _, port = hostport.strip().rpartition(":")
        try:
            async with asyncio.timeout(within_s):
                conn = await create_conn(host, int(port), client_id="devline-probe",
                                         request_timeout_ms=int(within_s * 1000), **opts)
        except Exception as exc:  # every failure is what we are here to name
            first = first or diagnose(exc, f"{host}:{port}")
            continue
        conn.close()
        return None
    return first


_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@")


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """`text` with each secret and the password of any `scheme://user:password@` replaced."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return _USERINFO.sub(r"\g<scheme>\g<user>:***@", text)


def explain(exc: BaseException, settings: Settings | None) -> str:
    """One line for a Kafka error: the cause a fresh probe finds, else the client's words
    (a broker answers, so the error is about something else). Secrets are redacted."""
    diagnosis = None
    if settings is not None:
        with contextlib.suppress(Exception):  # a failed probe leaves the client's message
            diagnosis = asyncio.run(probe(settings))
    if diagnosis is not None and settings is not None:
        text = diagnosis.message(settings)
    else:
        text = f"Kafka: {type(exc).__name__}: {exc}"
    return redact(text, settings.secrets() if settings else ())
