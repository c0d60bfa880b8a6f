"""One root exception and a clear subclass per failure.

Each error says what should happen to the message that caused it: `dead_letter` errors
send the record to the DLQ and the stream goes on; `retryable` errors retry the task.
"""

from __future__ import annotations


class DevlineError(Exception):
    """Root of every error devline raises on purpose."""

    dead_letter: bool = False
    retryable: bool = False


class ConfigError(DevlineError):
    """Settings or flags that cannot work (bad URL, missing secret, bad number)."""


class DecodeError(DevlineError):
    """Bytes that are not a devline event: bad magic, unknown schema, truncated, oversized."""

    dead_letter = True


class SchemaError(DevlineError):
    """A schema file that is missing or invalid, or a record that does not match its schema."""

    dead_letter = True


class PlanError(DevlineError):
    """A plan that cannot be accepted. `field` names the offending field (dotted path)."""

    dead_letter = False

    def __init__(self, message: str, field: str | None = None, cycle: list[str] | None = None):
        super().__init__(message)
        self.field = field
        self.cycle = cycle or []


class WorkspaceError(PlanError):
    """A path that is absolute or escapes the workspace."""


class ExecutorError(DevlineError):
    """An executor failed. `retryable` says whether another attempt can help."""

    def __init__(self, message: str, *, retryable: bool, error_type: str = "error",
                 output: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.error_type = error_type
        self.output = output
        self.retry_after = retry_after


class BrokerUnavailable(DevlineError):
    """No Kafka broker answered at the configured bootstrap address."""
