"""Records users have (OpenAI, Anthropic, any JSONL with a mapping) become valid events."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stream.events import Invalid, TeacherEvent
from stream.formats import detect, parse_mapping, to_event, to_rfc3339
from stream.ingest import Line, convert, read_lines

DATA = Path(__file__).parent / "data"


def _lines(name: str) -> list[Line]:
    return list(read_lines([DATA / name]))


def test_recorded_api_logs_become_events_joined_by_prompt() -> None:
    events = [convert(line, "auto", {}) for line in _lines("openai.jsonl")
              + _lines("anthropic.jsonl")]
    valid = [e for e in events if isinstance(e, TeacherEvent)]
    assert [e.reason for e in events if isinstance(e, Invalid)] == ["bad_format:openai-chat"]
    by_teacher: dict[str, set[str]] = {}
    for e in valid:
        by_teacher.setdefault(e.teacher, set()).add(e.sample_id)
    assert set(by_teacher) == {"gpt-4o", "o4-mini", "claude-sonnet-4-20250514"}
    samples = set.union(*by_teacher.values())
    assert len(samples) == 8 and all(s == samples for s in by_teacher.values())
    gpt = next(e for e in valid if e.teacher == "gpt-4o")
    assert gpt.teacher_version == "gpt-4o-2024-08-06/fp_07871e2ad8"
    assert gpt.event_id.startswith("chatcmpl-") and gpt.answer is None
    o4 = next(e for e in valid if e.teacher == "o4-mini")
    assert o4.output.startswith("**Comparing") and "Final answer:" in o4.output  # reasoning kept
    assert o4.produced_at.tzinfo is not None and o4.prompt and o4.prompt.startswith("Compare")


def test_same_line_same_event_id() -> None:
    record = {"teacher": "t", "sample_id": "s", "output": "o", "produced_at": 1767225600}
    first, second = to_event(dict(record)), to_event(dict(record))
    assert first["event_id"] == second["event_id"] and first["event_id"].startswith("ev-")
    assert to_event({**record, "output": "p"})["event_id"] != first["event_id"]


@pytest.mark.parametrize(("value", "expected"), [
    (1767225600, "2026-01-01T00:00:00Z"),
    (1767225600.5, "2026-01-01T00:00:00.500000Z"),
    (1767225600000, "2026-01-01T00:00:00Z"),  # milliseconds
    ("1767225600", "2026-01-01T00:00:00Z"),
    ("2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00Z"),
    ("2026-01-01T00:00:00", "2026-01-01T00:00:00Z"),
    ("not a time", "not a time"),  # left for the validator to reject with its reason
    (True, True),
])
def test_times_from_epoch_and_iso(value: object, expected: object) -> None:
    assert to_rfc3339(value) == expected


def test_generic_jsonl_with_a_mapping() -> None:
    mapping = parse_mapping(["sample_id=.req.case", "teacher='my-llm'",
                             "output=resp.text", "produced_at=ts"])
    line = Line("f", 1, b'{"req": {"case": "c7"}, "resp": {"text": "Final answer: no"}, '
                        b'"ts": 1767225600, "prompt": "q?"}')
    event = convert(line, "map", mapping)
    assert isinstance(event, TeacherEvent)
    assert (event.sample_id, event.teacher, event.prompt) == ("c7", "my-llm", "q?")
    missing = convert(Line("f", 2, b'{"resp": {"text": "x"}, "ts": 1}'), "map", mapping)
    assert isinstance(missing, Invalid) and missing.reason == "missing_field:sample_id"


def test_bad_mappings_are_named() -> None:
    with pytest.raises(ValueError, match="FIELD=EXPRESSION"):
        parse_mapping(["sample_id"])
    with pytest.raises(ValueError, match="--map teacher"):
        parse_mapping(["teacher=a[[["])


def test_detect_and_wrong_shapes() -> None:
    assert detect({"object": "chat.completion", "choices": []}) == "openai-chat"
    assert detect({"response": {"object": "response", "output": []}}) == "openai-responses"
    assert detect({"type": "message", "content": []}) == "anthropic"
    assert detect({"teacher": "x"}) == "event"
    assert convert(Line("f", 1, b"[1]"), "auto", {}).reason == "not_object"
    assert convert(Line("f", 1, b"{oops"), "auto", {}).reason == "not_json"
    assert convert(Line("f", 1, b'{"content": 1}'), "anthropic", {}).reason == \
        "bad_format:anthropic"


def test_anthropic_without_a_time_is_rejected_and_an_explicit_teacher_wins() -> None:
    response = {"id": "msg_1", "type": "message", "model": "claude-x",
                "content": [{"type": "thinking", "thinking": "Hmm."},
                            {"type": "text", "text": "Final answer: yes"}]}
    bare = {**response, "sample_id": "s1"}  # a response alone has no prompt to join on
    assert convert(Line("f", 1, orjson.dumps(bare)), "auto", {}).reason == \
        "missing_field:produced_at"
    line = {"teacher": "judge", "time": "2026-03-01T12:00:00Z",
            "request": {"model": "claude-x", "system": "Be brief.",
                        "messages": [{"role": "user", "content": "Q?"}]},
            "response": response}
    event = convert(Line("f", 2, orjson.dumps(line)), "auto", {})
    assert isinstance(event, TeacherEvent)
    assert (event.teacher, event.teacher_version) == ("judge", "claude-x")
    assert event.output == "Hmm.\n\nFinal answer: yes"
    assert event.prompt == "system: Be brief.\nuser: Q?"
