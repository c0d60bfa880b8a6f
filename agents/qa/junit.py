"""Failed and errored test cases from a pytest JUnit XML report (xunit1: file and line)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class CaseFailure:
    test_id: str  # pytest node id: file::Class::name
    kind: str  # "failed" or "error"
    message: str
    line: int | None  # 1-based: the failing line in the file when the traceback names it


def parse_junit(xml_text: str, path: str) -> list[CaseFailure]:
    """Failures in `xml_text`; ValueError when it is not a JUnit report."""
    # The report is written by pytest, not by the checked code's author, and expat does not
    # fetch external entities: ElementTree is adequate here.
    try:
        root = ET.fromstring(xml_text)  # noqa: S314
    except ET.ParseError as exc:
        raise ValueError(f"not a JUnit report: {exc}") from exc
    failures = []
    for case in root.iter("testcase"):
        for kind, tag in (("failed", "failure"), ("error", "error")):
            node = case.find(tag)
            if node is None:
                continue
            text = node.text or ""
            message = (node.get("message") or text).strip().splitlines()
            failures.append(CaseFailure(
                test_id=_node_id(case, path), kind=kind,
                message=message[0][:300] if message else kind,
                line=_failing_line(text, case.get("file") or path, case.get("line"))))
    return failures


def _node_id(case: ET.Element, path: str) -> str:
    file = case.get("file") or path
    classname, name = case.get("classname") or "", case.get("name") or "?"
    module = str(PurePosixPath(file).with_suffix("")).replace("/", ".")
    inner = classname[len(module) + 1:] if classname.startswith(module + ".") else ""
    return "::".join(part for part in (file, *inner.split("."), name) if part)


def _failing_line(text: str, file: str, def_line: str | None) -> int | None:
    hits = re.findall(rf"^{re.escape(file)}:(\d+):", text, flags=re.MULTILINE)
    if hits:
        return int(hits[-1])
    # xunit1 writes the 0-based line of the test's def.
    return int(def_line) + 1 if def_line and def_line.isdigit() else None
