"""The published event schema, the decoder and the docs agree."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import hypothesis
import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import TeacherEvent, decode_event
from stream.schema import example_event, published_schema, render

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "bring-your-own-teachers.md"
VALIDATOR = jsonschema.Draft202012Validator(published_schema())
BASE = {"event_id": "e1", "sample_id": "s1", "teacher": "gpt", "output": "Final answer: yes",
        "produced_at": "2026-01-01T00:00:00Z"}


def _with(**changes: object) -> dict:
    event = {**BASE, **changes}
    return {k: v for k, v in event.items() if v is not _DROP}


_DROP = object()
#: Events both must accept (True) or both reject (False).
CORPUS = [
    (BASE, True),
    (example_event(), True),
    (_with(produced_at="2026-01-01T00:00:00+02:00"), True),
    (_with(produced_at="2026-01-01T00:00:00.123456Z"), True),
    (_with(produced_at="2026-01-01 00:00:00"), True),  # no offset: UTC
    (_with(teacher_version=None, labels=None, meta=None, prompt=None), True),  # null = absent
    (_with(ground_truth=[1, 2], extra_field={"kept": "ignored"}), True),
    (_with(event_id="x" * 512), True),
    (_with(output=""), True),
    (_with(labels={"a": [1]}, meta={}), True),
    *((_with(**{name: _DROP}), False) for name in BASE),
    *((_with(**{name: None}), False) for name in BASE),
    *((_with(**{name: 7}), False) for name in BASE),
    (_with(sample_id=""), False),
    (_with(teacher="   "), False),
    (_with(event_id="x" * 513), False),
    (_with(produced_at=1767225600), False),  # epoch numbers: converted by ingest, not here
    (_with(produced_at="yesterday"), False),
    (_with(produced_at="2026-13-01T00:00:00Z"), False),
    (_with(produced_at="2026-01-01T25:00:00Z"), False),
    (_with(produced_at="2026-01-01T00:00:60Z"), False),
    (_with(prompt=["not", "text"]), False),
    (_with(teacher_version=3), False),
    (_with(image={"uri": "x"}), False),
    (_with(answer=True), False),
    (_with(labels="finding"), False),
    (_with(meta=[1]), False),
]


def test_committed_schema_is_the_generated_one() -> None:
    path = ROOT / "stream" / "schemas" / "teacher-event.v1.json"
    assert path.read_text() == render(), "regenerate: python -m stream.schema > " + str(path)


def test_schema_covers_every_event_field() -> None:
    names = {f for f in TeacherEvent.__dataclass_fields__}
    assert set(published_schema()["properties"]) == names


@pytest.mark.parametrize(("event", "valid"), CORPUS)
def test_schema_and_decoder_accept_and_reject_the_same_events(event: dict, valid: bool) -> None:
    by_schema = VALIDATOR.is_valid(event)
    decoded = decode_event(orjson.dumps(event))
    by_decoder = isinstance(decoded, TeacherEvent)
    assert (by_schema, by_decoder) == (valid, valid), getattr(decoded, "reason", "")


def test_documented_leniency_of_the_decoder() -> None:
    """The two known differences, both documented: the decoder reads more ISO 8601 forms and
    checks the calendar, the schema checks the shape."""
    for stamp in ("20260101T000000Z", "2026-01-01"):
        assert not VALIDATOR.is_valid(_with(produced_at=stamp))
        assert isinstance(decode_event(orjson.dumps(_with(produced_at=stamp))), TeacherEvent)
    feb30 = _with(produced_at="2026-02-30T00:00:00Z")
    assert VALIDATOR.is_valid(feb30)
    assert decode_event(orjson.dumps(feb30)).reason == "bad_timestamp"


def _doc_events() -> list[dict]:
    """Every ```json block of the docs page that is an event (has a `teacher`)."""
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(), flags=re.S)
    docs = [json.loads(b) for b in blocks]
    events = [e for d in docs for e in (d if isinstance(d, list) else [d])]
    return [e for e in events if isinstance(e, dict) and "teacher" in e]


def test_every_event_in_the_docs_validates() -> None:
    events = _doc_events()
    assert len(events) >= 2
    for event in events:
        VALIDATOR.validate(event)
        assert isinstance(decode_event(orjson.dumps(event)), TeacherEvent)


def test_docs_list_every_field_and_dead_letter_reason() -> None:
    from stream.events import REJECTION_REASONS

    text = DOCS.read_text()
    for name in published_schema()["properties"]:
        assert f"`{name}`" in text, name
    for reason in REJECTION_REASONS:
        assert f"`{reason.split(':')[0]}" in text, reason


_ANY_JSON = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
                      st.lists(st.integers(0, 9), max_size=2),
                      st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2))
_TIMES = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1))
_GOOD = {
    "id": st.text(min_size=1, max_size=6),
    "text": st.text(max_size=12),
    "time": st.one_of(
        _TIMES.map(lambda d: d.isoformat()),
        _TIMES.map(lambda d: d.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")),
        _TIMES.map(lambda d: d.replace(tzinfo=timezone(timedelta(hours=-5))).isoformat())),
    "object": st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2),
}
_BAD = {"id": st.sampled_from(["", " ", "\t\n", "x" * 513]),
        "time": st.sampled_from(["", "now", "2026-01-01T24:00:00Z", "1/1/2026"])}
_KINDS = {"event_id": "id", "sample_id": "id", "teacher": "id", "output": "text",
          "produced_at": "time", "teacher_version": "text", "prompt": "text", "image": "text",
          "answer": "text", "labels": "object", "meta": "object", "ground_truth": "any",
          "unknown": "any"}


@st.composite
def _events(draw: st.DrawFn) -> dict:
    """Each field valid nine times in ten, else absent, of any JSON type, or a bad value of
    the right type; optional fields present half the time."""
    event = {}
    for name, kind in _KINDS.items():
        if name not in BASE and draw(st.booleans()):
            continue
        if kind == "any" or draw(st.integers(0, 9)) > 0:
            value = draw(_ANY_JSON if kind == "any" else _GOOD[kind])
        else:
            value = draw(st.one_of(_ANY_JSON, _BAD.get(kind, _ANY_JSON), st.just(_DROP)))
        if value is not _DROP:
            event[name] = value
    return event


@settings(max_examples=150, deadline=None)
@given(event=_events())
def test_schema_and_decoder_agree_on_generated_events(event: dict) -> None:
    decoded = decode_event(orjson.dumps(event))
    hypothesis.event(getattr(decoded, "reason", "valid").split(":")[0])  # the mix, in -v stats
    assert VALIDATOR.is_valid(event) == isinstance(decoded, TeacherEvent), (
        event, getattr(decoded, "reason", ""))
