"""QA records, output bounding, fingerprints and chain configuration: pure, no tools run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.qa import BUILTIN_CHAINS, CheckResult, CheckStatus, Finding, QAConfig, Verdict
from agents.qa.junit import parse_junit
from agents.qa.model import bound_output
from devline.errors import ConfigError


def _ruff(code: str, message: str, line: int) -> Finding:
    return Finding("ruff", code, message, line, line, fatal=True)


def _verdict(*findings: Finding, blocking: bool = True,
             status: CheckStatus = CheckStatus.FAIL) -> Verdict:
    check = CheckResult("ruff", status, blocking, ("ruff", "check", "m.py"), 5,
                        "out", findings, findings if blocking else ())
    return Verdict("m.py", "default", (check,), 7)


def test_key_ignores_lines_and_positions() -> None:
    a = Finding("mypy", "x", 'Name "y" is not defined (line 3) at m.py:3:7', 3, 3, True)
    b = Finding("mypy", "x", 'Name "y" is not defined (line 9) at m.py:9:1', 9, 9, True)
    assert a.key() == b.key()
    assert a.key() != Finding("mypy", "x", 'Name "z" is not defined', 3, 3, True).key()


def test_fingerprint_stable_across_line_shift_and_distinct_across_errors() -> None:
    shifted = _verdict(_ruff("F821", "Undefined name `x`", 3))
    assert shifted.fingerprint == _verdict(_ruff("F821", "Undefined name `x`", 40)).fingerprint
    assert len(shifted.fingerprint) == 16
    assert shifted.fingerprint != _verdict(_ruff("F821", "Undefined name `y`", 3)).fingerprint
    assert _verdict(blocking=False, status=CheckStatus.PASS).fingerprint == ""


def test_failing_counts_findings_and_blocking_checks_without_findings() -> None:
    two = _verdict(_ruff("F821", "Undefined name `x`", 3), _ruff("F821", "Undefined name `y`", 4))
    assert two.failing == 2 and not two.passed
    crashed = Verdict("t.py", "default", (CheckResult(
        "pytest", CheckStatus.ERROR, True, ("pytest",), 1, "", (), (), "timed out"),), 1)
    assert crashed.failing == 1 and crashed.fingerprint
    assert crashed.evidence()["summary"] == "pytest: error (timed out)"


def test_evidence_and_record() -> None:
    verdict = _verdict(_ruff("F821", "Undefined name `x`", 3))
    evidence = verdict.evidence()
    assert evidence == {"check": "ruff", "command": "ruff check m.py", "output": "out",
                        "lines": [[3, 3]], "summary": "ruff: F821 Undefined name `x` (line 3)"}
    record = verdict.to_record()
    json.dumps(record)  # JSON friendly
    assert record["passed"] is False and record["fingerprint"] == verdict.fingerprint
    assert set(record["checks"][0]) == {"name", "status", "blocking", "command", "duration_ms",
                                        "findings", "introduced", "reason", "output"}
    assert _verdict(blocking=False, status=CheckStatus.PASS).evidence() == {}


def test_output_bounded_with_head_tail_and_gap() -> None:
    text = "HEAD" + "x" * 100_000 + "TAIL"
    bounded = bound_output(text)
    assert len(bounded.encode()) <= 8192
    assert bounded.startswith("HEAD") and bounded.endswith("TAIL")
    assert "bytes elided" in bounded
    elided = int(bounded.split("... ")[1].split(" bytes")[0])
    assert len(bounded.encode()) - len(f"\n... {elided} bytes elided ...\n") + elided == len(text)
    assert len(bound_output("é" * 5000, 2048).encode()) <= 2048
    assert bound_output("short") == "short"
    big = CheckResult("pytest", CheckStatus.FAIL, True, (), 1, text, (), ())
    assert len(big.to_record()["output"].encode()) <= 2048
    verdict = Verdict("t.py", "default", (big,), 1)
    assert len(verdict.evidence()["output"].encode()) <= 8192


def test_builtin_chains_per_file() -> None:
    config = QAConfig.builtin()
    assert config.names() == ["default", "off", "strict", "syntax"]
    assert config.chain("default", "pkg/mod.py") == ["parse", "ruff"]
    assert config.chain("default", "tests/test_mod.py") == ["parse", "ruff", "pytest"]
    assert config.chain("default", "pkg/mod_test.py") == ["parse", "ruff", "pytest"]
    assert config.chain("strict", "pkg/mod.py") == ["parse", "ruff", "mypy"]
    assert config.chain("syntax", "tests/test_mod.py") == ["parse"]
    assert config.chain("off", "pkg/mod.py") == []
    assert config.chain("default", "web/app.js") == ["node-check"]
    assert config.chain("default", "web/app.test.mjs") == ["node-check", "node-test"]
    assert config.chain("default", "web/test_app.js") == ["node-check", "node-test"]
    assert config.chain("default", "web/app.ts") == ["tsc"]
    assert config.chain("default", "README.md") == []
    with pytest.raises(ConfigError, match="unknown QA chain 'nope'"):
        config.chain("nope", "pkg/mod.py")
    assert set(BUILTIN_CHAINS) == set(config.names())


def test_config_file_adds_chains_and_options(tmp_path: Path) -> None:
    path = tmp_path / "qa.toml"
    path.write_text('[chains.fast]\npython = ["parse", "ruff", "mypy"]\n'
                    'javascript = ["node-check"]\n'
                    '[checkers.ruff]\nfatal = ["E9", "F4"]\ntimeout_s = 5\n')
    config = QAConfig.from_file(path)
    assert config.chain("fast", "m.py") == ["parse", "ruff", "mypy"]
    assert config.chain("fast", "a.ts") == []
    assert config.chain("default", "m.py") == ["parse", "ruff"]
    assert config.options_for("ruff").fatal == ("E9", "F4")
    assert config.options_for("ruff").timeout_s == 5.0
    assert QAConfig.from_file(None) == QAConfig.builtin()


@pytest.mark.parametrize(("text", "match"), [
    ('[chains.x]\npython = ["parse", "pylint"]\n', "unknown checker 'pylint'"),
    ('[chains.x]\npython = ["node-check"]\n', "does not check python"),
    ('[chains.x]\ncobol = ["parse"]\n', "unknown language 'cobol'"),
    ('[chains.x]\npython = "parse"\n', "must be a list"),
    ('[checkers.pylint]\ntimeout_s = 3\n', "unknown checker"),
    ('[checkers.ruff]\ntimeout = 3\n', "unknown option"),
    ('[checkers.ruff]\ntimeout_s = -1\n', "positive number"),
    ('[checkers.mypy]\nfatal = ["E"]\n', "only ruff takes"),
    ('[chain.x]\npython = ["parse"]\n', "unknown section"),
    ('[chains.x\n', "not valid TOML"),
])
def test_config_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "qa.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        QAConfig.from_file(path)


def test_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="QA config"):
        QAConfig.from_file(tmp_path / "absent.toml")


def test_junit_ids_for_functions_and_classes() -> None:
    xml = ('<testsuites><testsuite>'
           '<testcase classname="tests.test_m" name="test_a" file="tests/test_m.py" line="4">'
           '<failure message="assert 1 == 2">tests/test_m.py:6: in test_a\n assert 1 == 2'
           '</failure></testcase>'
           '<testcase classname="tests.test_m.TestK" name="test_b" file="tests/test_m.py" '
           'line="9"><error message="fixture broke">boom</error></testcase>'
           '<testcase classname="tests.test_m" name="test_ok" file="tests/test_m.py" line="1"/>'
           '</testsuite></testsuites>')
    failures = parse_junit(xml, "tests/test_m.py")
    assert [(f.test_id, f.kind, f.line) for f in failures] == [
        ("tests/test_m.py::test_a", "failed", 6),
        ("tests/test_m.py::TestK::test_b", "error", 10)]
    with pytest.raises(ValueError, match="not a JUnit report"):
        parse_junit("<nope", "t.py")
