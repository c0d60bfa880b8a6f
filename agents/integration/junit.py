"""Parse pytest's JUnit XML into one `TestOutcome` per test case (pure, no I/O).

Node ids are rebuilt as pytest prints them ("path/to/test_x.py::Class::test_name[param]"):
from the `file` attribute (junit_family=xunit1, which `run_shard` asks for), else by
finding which prefix of the dotted classname is a file under `root`, else by taking the
trailing capitalised parts of the classname as classes. A collection error is a test case
with an empty classname and the module as its name; it gets the module path as its id.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from devline.errors import DevlineError

#: Bytes kept of a test's captured output, and of its traceback (head and tail).
MAX_OUTPUT_BYTES = 8 * 1024
MAX_TRACEBACK_BYTES = 16 * 1024

# What a child element of a <testcase> says about the test.
_STATUS_BY_TAG = {"failure": "failed", "error": "error", "skipped": "skipped"}
# pytest's header above each captured stream ("---- Captured Out ----").
_SECTION_HEADER = re.compile(r"^-+ Captured \w+ -+$", re.MULTILINE)


class JunitError(DevlineError):
    """Bytes that are not a JUnit report we can read."""


@dataclass(frozen=True)
class TestOutcome:
    """One test's result: status is "passed", "failed", "error" or "skipped"."""

    __test__ = False  # a result type, not a pytest test class

    test_id: str
    status: str
    duration_s: float
    message: str
    output: str
    traceback: str


def parse_junit(xml: bytes | str, root: Path | None = None) -> list[TestOutcome]:
    """Every <testcase> of a pytest JUnit report, in report order."""
    text = xml.decode("utf-8", "replace") if isinstance(xml, bytes) else xml
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise JunitError("JUnit report with a DTD refused (entity expansion)")
    try:
        tree = ET.fromstring(text)  # noqa: S314 - no DTD (checked above), so no entities
    except ET.ParseError as exc:
        raise JunitError(f"not a JUnit report: {exc}") from exc
    return [_outcome(case, root) for case in tree.iter("testcase")]


def recorded_durations(outcomes: Iterable[TestOutcome]) -> dict[str, float]:
    """Seconds per test id as `discover_tests` names it: parametrized cases are summed
    under their base id ("path::test_x[1]" and "[2]" into "path::test_x"), since pytest runs
    all of them when given the base id."""
    totals: dict[str, float] = {}
    for outcome in outcomes:
        base = outcome.test_id.split("[", 1)[0]
        totals[base] = totals.get(base, 0.0) + outcome.duration_s
    return totals


def clip(text: str, limit: int = MAX_OUTPUT_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, keeping its head and its tail."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    marker = f"\n[... {len(data) - limit} bytes cut ...]\n".encode()
    keep = max(limit - len(marker) - 16, 0)  # 16: room for the count growing a digit
    head, tail = data[: keep // 2], data[len(data) - (keep - keep // 2):]
    out = head.decode("utf-8", "ignore") + marker.decode() + tail.decode("utf-8", "ignore")
    return out if len(out.encode()) <= limit else out.encode()[:limit].decode("utf-8", "ignore")


def node_id(classname: str, name: str, file: str | None = None,
            root: Path | None = None) -> str:
    """pytest's node id for a JUnit test case (see the module docstring for how)."""
    if not classname:  # a collection report: the module (or directory) itself
        return file or _module_path(name.split("."), root)[0]
    if file:
        dotted = re.sub(r"\.py$", "", file).replace("/", ".")
        if classname == dotted or classname.startswith(dotted + "."):
            classes = classname[len(dotted) + 1:].split(".") if classname != dotted else []
            return "::".join([file, *classes, name])
    path, classes = _module_path(classname.split("."), root)
    return "::".join([path, *classes, name])


def _module_path(parts: list[str], root: Path | None) -> tuple[str, list[str]]:
    """Split dotted parts into a module file and the classes inside it."""
    if root is not None:
        for k in range(len(parts), 0, -1):
            candidate = "/".join(parts[:k]) + ".py"
            if (root / candidate).is_file():
                return candidate, parts[k:]
    k = len(parts)
    while k > 1 and parts[k - 1][:1].isupper():  # pytest's classes are "Test*"
        k -= 1
    return "/".join(parts[:k]) + ".py", parts[k:]


def _outcome(case: ET.Element, root: Path | None) -> TestOutcome:
    test_id = node_id(case.get("classname", ""), case.get("name", ""), case.get("file"), root)
    status, message, traceback = "passed", "", ""
    for child in case:
        if child.tag in _STATUS_BY_TAG:
            status = _STATUS_BY_TAG[child.tag]
            message = child.get("message", "")
            traceback = child.text or ""
            break  # a failure followed by a teardown error is still a failure
    return TestOutcome(
        test_id=test_id,
        status=status,
        duration_s=_seconds(case.get("time")),
        message=message,
        output=clip(_captured(case)),
        traceback=clip(traceback, MAX_TRACEBACK_BYTES),
    )


def _captured(case: ET.Element) -> str:
    """The non-empty captured sections (log, stdout, stderr), each under its header."""
    sections = []
    for tag in ("system-out", "system-err"):
        for element in case.iter(tag):
            text = element.text or ""
            headers = list(_SECTION_HEADER.finditer(text))
            if not headers:
                sections.append(text.strip())
            starts = [h.start() for h in headers] + [len(text)]
            for header, end in zip(headers, starts[1:], strict=True):
                if text[header.end():end].strip():
                    sections.append(text[header.start():end].strip())
    return "\n".join(s for s in sections if s)


def _seconds(value: str | None) -> float:
    try:
        seconds = float(value or 0)
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds >= 0 else 0.0
