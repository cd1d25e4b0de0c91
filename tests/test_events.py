"""The event contract: every rejection has its reason; valid events round-trip."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from stream.events import REJECTION_REASONS, Invalid, TeacherEvent, decode_event

VALID = {"event_id": "e1", "sample_id": "s1", "teacher": "gpt-4", "output": "Final answer: 7",
         "produced_at": "2026-03-01T12:00:00+02:00"}


def encode(**changes: object) -> bytes:
    doc = {**VALID, **changes}
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


@pytest.mark.parametrize(("raw", "reason"), [
    (None, "empty"),
    (b"", "not_json"),
    (b"{", "not_json"),
    (b"\xff\xfe", "not_json"),
    (b"[]", "not_object"),
    (b'"text"', "not_object"),
    (encode(event_id=...), "missing_field:event_id"),
    (encode(output=None), "missing_field:output"),
    (encode(produced_at=...), "missing_field:produced_at"),
    (encode(teacher=3), "bad_type:teacher"),
    (encode(sample_id=["s"]), "bad_type:sample_id"),
    (encode(answer=42), "bad_type:answer"),
    (encode(labels="x"), "bad_type:labels"),
    (encode(teacher="  "), "bad_value:teacher"),
    (encode(produced_at="2026-02-30T00:00:00Z"), "bad_timestamp"),
    (encode(produced_at="soon"), "bad_timestamp"),
    (b"[" * 100_000 + b"]" * 100_000, "not_json"),  # deep nesting must not crash
])
def test_every_bad_message_has_its_reason(raw: bytes | None, reason: str) -> None:
    decoded = decode_event(raw)
    assert isinstance(decoded, Invalid) and decoded.reason == reason
    assert reason in REJECTION_REASONS


def test_size_limit_is_configurable() -> None:
    raw = encode(output="x" * 500)
    assert isinstance(decode_event(raw, max_bytes=10_000), TeacherEvent)
    rejected = decode_event(raw, max_bytes=100)
    assert isinstance(rejected, Invalid) and rejected.reason == "too_large"


def test_valid_event_round_trips_and_keeps_its_timezone_instant() -> None:
    ev = decode_event(encode(labels={"edema": "stable"}, meta={"k": 1}, ground_truth="7"))
    assert isinstance(ev, TeacherEvent)
    assert ev.produced_at == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert decode_event(ev.to_json_bytes()) == ev
    assert json.loads(ev.to_json_bytes())["produced_at"] == "2026-03-01T10:00:00Z"


def test_naive_timestamps_are_taken_as_utc() -> None:
    ev = decode_event(encode(produced_at="2026-03-01T10:00:00"))
    assert isinstance(ev, TeacherEvent)
    assert ev.produced_at.utcoffset() == timedelta(0)
    assert ev.produced_at == datetime(2026, 3, 1, 10, tzinfo=timezone.utc)  # noqa: UP017
