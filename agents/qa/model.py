"""What a QA run produces: findings, one result per check, and the verdict on the file.

All records are frozen and JSON friendly (`Verdict.to_record`), so a verdict can ride on an
event and be replayed; nothing here runs a tool.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

OUTPUT_LIMIT = 8 * 1024
RECORD_OUTPUT_LIMIT = 2 * 1024

# Line numbers, columns and memory addresses move when unrelated code moves; a finding's
# identity must not (the introduced-only diff and the fingerprint compare across versions).
_LINE_REF = re.compile(r"\b(?:line|lines|ln)\s+\d+(?:\s*-\s*\d+)?", re.IGNORECASE)
_POSITION = re.compile(r":\d+(?::\d+)?\b")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]+\b")
_SANDBOX = re.compile(r"\S*devline-qa-[A-Za-z0-9_]+/(?:work|qa)/")
_SPACE = re.compile(r"\s+")


class CheckStatus(StrEnum):
    PASS = "pass"  # noqa: S105 - a status, not a password
    FAIL = "fail"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """One problem a check reported. `fatal` findings can block; the others are advice."""

    check: str
    code: str
    message: str
    line: int | None
    end_line: int | None
    fatal: bool

    def key(self) -> str:
        """Line-agnostic identity: the same problem keeps its key when code above it moves."""
        return f"{self.check}|{self.code}|{normalise_message(self.message)}"

    def to_record(self) -> dict[str, Any]:
        return {"check": self.check, "code": self.code, "message": self.message,
                "line": self.line, "end_line": self.end_line, "fatal": self.fatal}

    def describe(self) -> str:
        where = ""
        if self.line is not None:
            where = (f" (line {self.line})" if self.end_line in (None, self.line)
                     else f" (lines {self.line}-{self.end_line})")
        return f"{self.code} {self.message}{where}".strip()


@dataclass(frozen=True)
class CheckResult:
    """One checker's run on the file. `blocking` means this check keeps the file unverified."""

    name: str
    status: CheckStatus
    blocking: bool
    command: tuple[str, ...]
    duration_ms: int
    output: str
    findings: tuple[Finding, ...]
    introduced: tuple[Finding, ...]
    reason: str = ""

    def to_record(self, output_limit: int = RECORD_OUTPUT_LIMIT) -> dict[str, Any]:
        return {"name": self.name, "status": str(self.status), "blocking": self.blocking,
                "command": list(self.command), "duration_ms": self.duration_ms,
                "findings": [f.to_record() for f in self.findings],
                "introduced": [f.to_record() for f in self.introduced],
                "reason": self.reason, "output": bound_output(self.output, output_limit)}

    def summary(self) -> str:
        """One line for a human or a fixer prompt."""
        if self.introduced:
            more = len(self.introduced) - 1
            tail = f" and {more} more" if more else ""
            return f"{self.name}: {self.introduced[0].describe()}{tail}"
        detail = self.reason or "failed without a parsable finding"
        return f"{self.name}: {self.status} ({detail})"


@dataclass(frozen=True)
class Verdict:
    """The file is verified when no check blocks; otherwise it needs a fix."""

    path: str
    chain: str
    checks: tuple[CheckResult, ...]
    duration_ms: int

    @property
    def passed(self) -> bool:
        return not any(c.blocking for c in self.checks)

    @property
    def failing(self) -> int:
        # A blocking check without findings (a crashed run, a timeout) still counts once.
        return sum(len(c.introduced) or 1 for c in self.checks if c.blocking)

    @property
    def fingerprint(self) -> str:
        """Same problems -> same value, across runs and line shifts; "" when passed."""
        if self.passed:
            return ""
        parts: list[str] = []
        for check in self.checks:
            if not check.blocking:
                continue
            if check.introduced:
                parts.extend(f.key() for f in check.introduced)
            else:
                parts.append(f"check|{check.name}|{check.status}")
        digest = hashlib.sha256("\n".join(sorted(parts)).encode("utf-8"))
        return digest.hexdigest()[:16]

    def evidence(self) -> dict[str, Any]:
        """What a fixer needs about the first blocking check; {} when the file passed."""
        check = next((c for c in self.checks if c.blocking), None)
        if check is None:
            return {}
        lines = [[f.line, f.end_line if f.end_line is not None else f.line]
                 for f in check.introduced if f.line is not None]
        return {"check": check.name,
                "command": shlex.join(check.command) if check.command else "(in-process)",
                "output": bound_output(check.output, OUTPUT_LIMIT),
                "lines": lines, "summary": check.summary()}

    def to_record(self) -> dict[str, Any]:
        return {"path": self.path, "chain": self.chain, "passed": self.passed,
                "duration_ms": self.duration_ms, "fingerprint": self.fingerprint,
                "checks": [c.to_record() for c in self.checks]}


def normalise_message(message: str) -> str:
    text = _SANDBOX.sub("", message)
    text = _LINE_REF.sub("line N", text)
    text = _POSITION.sub("", text)
    text = _ADDRESS.sub("0x?", text)
    return _SPACE.sub(" ", text).strip()


def bound_output(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """`text` cut to at most `limit` UTF-8 bytes: head and tail, with the gap named."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    # Reserve room for the marker, whose digits depend on the gap it names.
    marker_room = len(f"\n... {len(data)} bytes elided ...\n".encode())
    keep = max(limit - marker_room, 0)
    head, tail = data[: keep // 2], data[len(data) - (keep - keep // 2):] if keep else b""
    elided = len(data) - len(head) - len(tail)
    marker = f"\n... {elided} bytes elided ...\n"
    return (head.decode("utf-8", errors="ignore") + marker
            + tail.decode("utf-8", errors="ignore"))
