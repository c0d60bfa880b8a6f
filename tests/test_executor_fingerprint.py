"""Error fingerprints: the same error matches across runs; different errors do not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.executors.fingerprint import config_fingerprint, error_fingerprint, normalize_error

SAME = [
    (
        'File "/tmp/devline-t1-a8f3k2/src/app.py", line 12, in <module>\n'
        "NameError: name 'Usr' is not defined (pid 4411, took 0.53s)",
        'File "/tmp/devline-t1-zz91qq/src/app.py", line 40, in <module>\n'
        "NameError: name 'Usr' is not defined (pid 17, took 12.9s)",
    ),
    (
        "2026-01-02T03:04:05.123Z worker 3 lost lease 3f2a9c1b-1111-2222-3333-444455556666",
        "2027-11-30 23:59:01+01:00 worker 12 lost lease 00000000-aaaa-bbbb-cccc-000000000000",
    ),
    ("<Conn object at 0x7f3a2b1c> closed at 10:01:02",
     "<Conn object at 0x55d0e1> closed at 9:00:00"),
    ("commit 0158f0d broke the build", "commit fa70979 broke the build"),
    ("HTTP 503 from http://127.0.0.1:41233/v1", "HTTP 500 from http://127.0.0.1:39999/v1"),
    ("/var/folders/xy/k2j3/T/tmpa1b2/x.py failed", "/var/folders/ab/zzzz/T/tmpq9/x.py failed"),
]
DIFFERENT = [
    ("NameError: name 'Usr' is not defined", "NameError: name 'User' is not defined"),
    ("src/app.py:3: E501 line too long", "src/app.py:3: F401 unused import"),
    ("ModuleNotFoundError: No module named 'py311compat'",
     "ModuleNotFoundError: No module named 'py312compat'"),
    ('File "/tmp/sb1/src/app.py", line 1', 'File "/tmp/sb1/src/db.py", line 1'),
]


@pytest.mark.parametrize(("one", "two"), SAME)
def test_volatile_parts_do_not_matter(one: str, two: str) -> None:
    assert error_fingerprint("exception", one) == error_fingerprint("exception", two)


@pytest.mark.parametrize(("one", "two"), DIFFERENT)
def test_different_errors_differ(one: str, two: str) -> None:
    assert error_fingerprint("exception", one) != error_fingerprint("exception", two)


def test_error_type_is_part_of_the_fingerprint() -> None:
    assert error_fingerprint("timeout", "x") != error_fingerprint("exit_status", "x")
    assert error_fingerprint(" Timeout ", "x") == error_fingerprint("timeout", "x")


def test_fingerprint_is_short_hex_and_stable() -> None:
    value = error_fingerprint("exit_status", "command exited with status 2 (EX_USAGE)")
    assert len(value) == 16 and int(value, 16) >= 0
    assert value == error_fingerprint("exit_status", "command exited with status 2 (EX_USAGE)")


def test_whitespace_is_collapsed() -> None:
    assert normalize_error("  a \n\t b  ") == "a b"


@given(st.text(max_size=300), st.integers(0, 10**9), st.integers(0, 10**9))
def test_any_number_swap_keeps_the_fingerprint(prefix: str, n1: int, n2: int) -> None:
    one = f"{prefix} failed after {n1} retries on port {n2}"
    two = f"{prefix} failed after {n2} retries on port {n1}"
    assert error_fingerprint("e", one) == error_fingerprint("e", two)


def test_config_fingerprint_ignores_key_order() -> None:
    assert config_fingerprint({"a": 1, "b": [1, 2]}) == config_fingerprint({"b": [1, 2], "a": 1})
    assert config_fingerprint({"a": 1}) != config_fingerprint({"a": 2})
