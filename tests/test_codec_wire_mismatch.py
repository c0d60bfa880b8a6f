"""A wire format that does not match the codec's is read as before and logged once: a
single-object record with a registry configured (its producer skips the registry, so
registry clients cannot read it), a Confluent-framed one without (this process writes what
registry clients cannot read)."""

from __future__ import annotations

import logging

import pytest
from samples import mock_registry, plan_submitted

from devline.errors import DecodeError
from schemas.codec import Codec


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "devline.codec" and r.levelno == logging.WARNING]


def test_single_object_with_a_registry_is_decoded_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    single = Codec().encode("PlanSubmitted", plan_submitted())
    expected = Codec().decode(single)  # the record with its defaults filled in
    codec = Codec(registry_client=mock_registry())
    with caplog.at_level(logging.WARNING, logger="devline.codec"):
        assert codec.decode(single) == expected
        assert codec.decode(single) == expected
        codec.decode(codec.encode("PlanSubmitted", expected[1]))  # its own format: quiet
    [message] = warnings(caplog)
    assert "single-object PlanSubmitted record" in message
    assert "registry clients" in message and "DEVLINE_REGISTRY_URL" in message


def test_confluent_without_a_registry_is_refused_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    framed = Codec(registry_client=mock_registry()).encode("PlanSubmitted", plan_submitted())
    codec = Codec()
    with caplog.at_level(logging.WARNING, logger="devline.codec"):
        for _ in range(2):
            with pytest.raises(DecodeError, match="no schema registry is configured"):
                codec.decode(framed)
        codec.decode(codec.encode("PlanSubmitted", plan_submitted()))  # its own: quiet
    [message] = warnings(caplog)
    schema_id = int.from_bytes(framed[1:5], "big")
    assert f"schema id {schema_id}" in message and "set DEVLINE_REGISTRY_URL" in message


def test_each_codec_warns_for_itself(caplog: pytest.LogCaptureFixture) -> None:
    single = Codec().encode("PlanSubmitted", plan_submitted())
    with caplog.at_level(logging.WARNING, logger="devline.codec"):
        for _ in range(2):
            Codec(registry_client=mock_registry()).decode(single)
    assert len(warnings(caplog)) == 2
