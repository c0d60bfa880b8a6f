"""Stable short hashes: of an error (so repeats of "the same error" match) and of a config.

`error_fingerprint` strips what changes from one occurrence of an error to the next —
timestamps, uuids, hex ids and addresses, temp and sandbox directories, numbers (line
numbers, pids, ports, durations, sizes) — and hashes what is left together with the error
type. Digits inside identifiers (`py311`, `E501`, `foo2`) are kept: they name things.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

FINGERPRINT_CHARS = 16
_MAX_MESSAGE_CHARS = 4000

# Order matters: the wider patterns run first so the number rule cannot split them.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
                r"(?:Z|[+-]\d{2}:?\d{2})?"), "<ts>"),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<time>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                r"[0-9a-fA-F]{12}\b"), "<uuid>"),
    # A temp root plus the one (random) directory below it; the rest of the path is kept.
    (re.compile(r"(?:/private)?/var/folders/[^\s/'\"]+/[^\s/'\"]+/T/[^\s/'\"]+"
                r"|/(?:var/)?tmp/[^\s/'\"]+"
                r"|[A-Za-z]:\\[^\s'\"]*?\\Temp\\[^\s\\'\"]+"), "<tmp>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{7,}\b"), "<hex>"),
    (re.compile(r"(?<![A-Za-z0-9_.])\d+(?:\.\d+)*"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def normalize_error(message: str) -> str:
    """`message` with its volatile parts replaced by placeholders and whitespace collapsed."""
    text = message[:_MAX_MESSAGE_CHARS]
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text.strip()


def error_fingerprint(error_type: str, message: str) -> str:
    """A short hex hash that is equal for two occurrences of the same error."""
    key = f"{error_type.strip().lower()}\0{normalize_error(message)}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:FINGERPRINT_CHARS]


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """A short hex hash of a JSON-able config, independent of key order."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:FINGERPRINT_CHARS]
