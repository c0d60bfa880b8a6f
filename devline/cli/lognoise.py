"""Kafka client lines that are expected while a cluster or a topic is new, and chatter
from the libraries, kept off a clean start's log.

aiokafka logs at ERROR what it retries: the group coordinator that a fresh broker has
not elected yet (`__consumer_offsets` is being created), and a topic created a moment ago
that the broker's metadata does not list yet. During the first `grace_s` seconds of a
process they are logged at DEBUG (shown with `--log-level DEBUG`); afterwards they are
what they say, and pass unchanged.
"""

from __future__ import annotations

import logging
import time

# (logger, message format) pairs that are transient while things start.
TRANSIENT = {
    ("aiokafka.consumer.group_coordinator", "Group Coordinator Request failed: %s"),
    ("aiokafka.cluster", "Topic %s not found in cluster metadata"),
    ("aiokafka.producer.sender", "FindCoordinator Request failed: %s"),
}


# (logger, message start) of INFO lines that say nothing a user acts on, at any time: the
# RocksDB store's line per partition opened (about 50 on every start of a processor).
CHATTER = {
    ("faust.stores.rocksdb", "opening partition "),
}


class StartupNoise(logging.Filter):
    """Demotes the transient start-up lines of `TRANSIENT` to DEBUG for `grace_s`."""

    def __init__(self, grace_s: float = 60.0, started: float | None = None) -> None:
        super().__init__()
        self.until = (time.time() if started is None else started) + grace_s

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and any(
                record.name == name and str(record.msg).startswith(start)
                for name, start in CHATTER):
            return self._demoted(record)
        if record.created > self.until or (record.name, record.msg) not in TRANSIENT:
            return True
        first = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if not getattr(first, "retriable", True):
            return True  # a fatal error keeps its level
        return self._demoted(record)

    @staticmethod
    def _demoted(record: logging.LogRecord) -> bool:
        """The record as a DEBUG line: shown only with `--log-level DEBUG`."""
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().getEffectiveLevel() <= logging.DEBUG


def install(grace_s: float = 60.0) -> StartupNoise:
    """Put the filter on every handler of the root logger (after logging is set up)."""
    noise = StartupNoise(grace_s)
    for handler in logging.getLogger().handlers:
        handler.addFilter(noise)
    return noise
