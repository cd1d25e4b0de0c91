"""The event contract: every rejection has its reason; valid events round-trip."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import (
    REJECTION_REASONS,
    Invalid,
    TeacherEvent,
    decode_event,
    format_timestamp,
    parse_timestamp,
    validate_event,
)

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


_FIELD_VALUES = st.one_of(st.none(), st.text(max_size=3), st.just("  "), st.just("x" * 513),
                          st.integers(), st.lists(st.text(max_size=2), max_size=2),
                          st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=2),
                          st.sampled_from(["2026-03-01T12:00:00Z", "2026-02-30T00:00:00Z"]))
_FIELDS = ("event_id", "sample_id", "teacher", "output", "produced_at", "teacher_version",
           "prompt", "image", "answer", "labels", "meta")


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(_FIELDS), _FIELD_VALUES), st.data())
def test_fast_path_accepts_exactly_what_the_ordered_checks_accept(
        changes: dict[str, object], data: st.DataObject) -> None:
    """validate_event's one-pass fast path and its ordered checks must agree: an object is
    accepted whole, or rejected with the reason of the first failing check (never with the
    fall-through bad_timestamp while the timestamp is fine)."""
    base = {**VALID, "produced_at": "2026-03-01T12:00:00Z"}
    dropped = data.draw(st.sets(st.sampled_from(_FIELDS)))
    obj = {k: v for k, v in {**base, **changes}.items() if k not in dropped}
    decoded = validate_event(obj)
    ok_ids = all(isinstance(obj.get(k), str) and obj[k].strip() and len(obj[k]) <= 512
                 for k in ("event_id", "sample_id", "teacher"))
    ok_types = (isinstance(obj.get("output"), str)
                and all(obj.get(k) is None or isinstance(obj[k], str)
                        for k in ("teacher_version", "prompt", "image", "answer"))
                and all(obj.get(k) is None or isinstance(obj[k], dict) for k in ("labels", "meta")))
    stamp = obj.get("produced_at")
    ok_stamp = isinstance(stamp, str) and parse_timestamp(stamp) is not None
    if ok_ids and ok_types and ok_stamp:
        assert isinstance(decoded, TeacherEvent)
        assert (decoded.event_id, decoded.teacher, decoded.output, decoded.labels) == (
            obj["event_id"], obj["teacher"], obj["output"], obj.get("labels"))
    else:
        assert isinstance(decoded, Invalid) and decoded.reason in REJECTION_REASONS
        if ok_stamp:
            assert decoded.reason != "bad_timestamp"


@settings(max_examples=500, deadline=None)
@given(ts=st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31),
                      timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30))])))
def test_format_timestamp_is_isoformat_in_utc_with_z(ts: datetime) -> None:
    expected = ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert format_timestamp(ts) == expected
    assert parse_timestamp(expected) == ts
