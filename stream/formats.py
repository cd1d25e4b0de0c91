"""Turn the JSON records users already have into teacher-output events.

A record is one decoded JSONL line. Each format maps it to a plain event dict, which
:func:`normalise` then completes the same way for every format: ``produced_at`` given as epoch
seconds (or milliseconds), a numeric string or ISO text becomes RFC 3339, and a missing
``event_id`` is derived from (teacher, sample_id, output), so ingesting the same file twice
yields the same ids and the monitor's dedup drops the repeats. Validation stays with
:func:`stream.events.validate_event`; nothing here decides whether an event is valid.

Formats (``FORMATS``):

``event``
    Our event format (the published schema), passed through.
``openai-chat``
    An OpenAI chat-completions response, alone or as a request/response pair the way
    gateways log it (``{"request": {...}, "response": {...}}``).
``openai-responses``
    An OpenAI Responses API object (``"object": "response"``), alone or in a pair.
``anthropic``
    An Anthropic Messages response (``"type": "message"``), alone or in a pair.
``auto``
    Picks one of the above per record from its shape.

In the API formats the teacher is a top-level ``teacher``, else the model the request asked
for (the response's model when there is no request); ``teacher_version`` is the model the
response reports; the sample id is a top-level ``sample_id``, else ``metadata.sample_id`` (of
the line or the request), else a hash of the prompt text, so that every teacher asked the same
prompt joins on one sample.

Any field can also be given by a JMESPath expression (``--map sample_id=request.id``; a
leading dot is allowed, as in jq), which overrides what the format found; with no format
(``map``), unmapped fields are read from the top-level key of the same name.

>>> rec = {"id": "msg_1", "type": "message", "model": "claude-sonnet-4-20250514",
...        "content": [{"type": "text", "text": "Final answer: yes"}],
...        "timestamp": 1767225600, "metadata": {"sample_id": "s1"}}
>>> ev = to_event(rec, "auto")
>>> ev["teacher"], ev["sample_id"], ev["produced_at"], ev["event_id"]
('claude-sonnet-4-20250514', 's1', '2026-01-01T00:00:00Z', 'msg_1')
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import jmespath

from stream.events import format_timestamp, parse_timestamp

Record = Mapping[str, Any]
Format = Literal["auto", "event", "openai-chat", "openai-responses", "anthropic", "map"]
FORMATS: tuple[str, ...] = get_args(Format)
#: Wrapper keys gateways use for the time of a call (tried in order when the response has none).
TIME_KEYS = ("produced_at", "created_at", "created", "timestamp", "start_time", "startTime",
             "time")
EPOCH_MS_ABOVE = 1e11  # an epoch number above this is in milliseconds (1e11 s is year 5138)


class FormatError(ValueError):
    """A record is not in the format it was read as; ``reason`` is the rejection code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def to_event(record: Any, fmt: str = "auto",
             mapping: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One record as an event dict, normalised; raises :class:`FormatError` on a wrong shape."""
    if not isinstance(record, Mapping):
        raise FormatError("not_object", f"record is {type(record).__name__}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect(record)
    event = {} if fmt == "map" else dict(_ADAPTERS[fmt](record))
    for name, value in apply_mapping(record, mapping or {}, fill_from_top=fmt == "map").items():
        event[name] = value
    return normalise(event)


def detect(record: Record) -> str:
    """The format a record looks like; ``event`` when nothing else fits."""
    body = _response(record)
    if body.get("object") == "chat.completion" or "choices" in body:
        return "openai-chat"
    if body.get("object") == "response":
        return "openai-responses"
    if body.get("type") == "message" and isinstance(body.get("content"), list):
        return "anthropic"
    return "event"


def parse_mapping(items: list[str] | tuple[str, ...] | Mapping[str, str]) -> dict[str, str]:
    """``["field=expr", ...]`` (or a dict), each compiled now; ValueError names a bad one."""
    pairs = items.items() if isinstance(items, Mapping) else [_split(i) for i in items]
    out: dict[str, str] = {}
    for name, expr in pairs:
        expr = expr.strip().removeprefix(".")
        try:
            jmespath.compile(expr)
        except jmespath.exceptions.JMESPathError as exc:
            raise ValueError(f"--map {name}: not a JMESPath expression: {exc}") from exc
        out[name.strip()] = expr
    return out


def _split(item: str) -> tuple[str, str]:
    name, sep, expr = item.partition("=")
    if not sep or not name.strip() or not expr.strip():
        raise ValueError(f"--map {item!r}: expected FIELD=EXPRESSION, e.g. sample_id=request.id")
    return name, expr


def apply_mapping(record: Record, mapping: Mapping[str, str],
                  fill_from_top: bool = False) -> dict[str, Any]:
    """Evaluate each mapped field; with ``fill_from_top`` also copy same-named top-level keys."""
    out = dict(record) if fill_from_top else {}
    for name, expr in mapping.items():
        value = jmespath.search(expr, record)
        if value is not None:
            out[name] = value
    return out


def normalise(event: dict[str, Any]) -> dict[str, Any]:
    """Convert the time to RFC 3339 and fill a deterministic ``event_id`` when absent."""
    stamp = event.get("produced_at")
    if stamp is not None:
        event["produced_at"] = to_rfc3339(stamp)
    if event.get("event_id") in (None, ""):
        teacher, sample, output = (event.get(k) for k in ("teacher", "sample_id", "output"))
        if isinstance(teacher, str) and isinstance(sample, str) and isinstance(output, str):
            event["event_id"] = derived_event_id(teacher, sample, output)
    return event


def derived_event_id(teacher: str, sample_id: str, output: str) -> str:
    """A stable id for an answer that came without one (same answer, same id)."""
    digest = hashlib.sha256("\x00".join((teacher, sample_id, output)).encode()).hexdigest()
    return f"ev-{digest[:32]}"


def prompt_sample_id(prompt: str) -> str:
    """A sample id shared by every teacher asked the same prompt."""
    return f"p-{hashlib.sha256(prompt.encode()).hexdigest()[:24]}"


def to_rfc3339(value: Any) -> Any:
    """Epoch seconds/milliseconds (number or numeric text) or ISO text as RFC 3339; anything
    else is returned unchanged, for the validator to reject with its reason."""
    if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
        value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) > EPOCH_MS_ABOVE else value
        try:
            return format_timestamp(datetime.fromtimestamp(seconds, tz=UTC))
        except (OverflowError, OSError, ValueError):
            return value
    if isinstance(value, str):
        parsed = parse_timestamp(value)
        return format_timestamp(parsed) if parsed is not None else value
    return value


# --- the API formats -------------------------------------------------------------------------

def _request(record: Record) -> Record:
    req = record.get("request")
    return req if isinstance(req, Mapping) else {}


def _response(record: Record) -> Record:
    resp = record.get("response")
    return resp if isinstance(resp, Mapping) else record


def _common(record: Record, model_key: str = "model") -> dict[str, Any]:
    """What every API format shares: teacher, version, sample id, time and id."""
    req, resp = _request(record), _response(record)
    resolved = resp.get(model_key)
    asked = record.get("teacher") or req.get("model") or resolved  # an explicit name wins
    event: dict[str, Any] = {"teacher": asked, "teacher_version": resolved,
                             "event_id": record.get("event_id") or resp.get("id")}
    for source in (record, resp, req):
        stamp = next((source[k] for k in TIME_KEYS if source.get(k) is not None), None)
        if stamp is not None:
            event["produced_at"] = stamp
            break
    meta = {**_dict(req.get("metadata")), **_dict(record.get("metadata"))}
    event["sample_id"] = record.get("sample_id") or meta.get("sample_id")
    return event


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _with_prompt(event: dict[str, Any], prompt: str | None) -> dict[str, Any]:
    if prompt:
        event["prompt"] = prompt
        event["sample_id"] = event.get("sample_id") or prompt_sample_id(prompt)
    return {k: v for k, v in event.items() if v is not None}


def _text_of(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") or p.get("input_text") or "" for p in content
                 if isinstance(p, Mapping)]
        return "\n".join(p for p in parts if isinstance(p, str) and p)
    return ""


def _turns(messages: Any) -> list[tuple[str, str]]:
    """(role, text) of each chat message."""
    if isinstance(messages, str):
        return [("user", messages)]
    if not isinstance(messages, list):
        return []
    return [(str(m.get("role", "user")), _text_of(m.get("content"))) for m in messages
            if isinstance(m, Mapping)]


def _prompt(turns: list[tuple[str, str]]) -> str | None:
    """One canonical prompt text for every API: a lone user turn is its text, anything else
    ``role: text`` lines, so the same question asked of any API hashes to one sample id."""
    turns = [(role, text) for role, text in turns if text]
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]
    return "\n".join(f"{role}: {text}" for role, text in turns) or None


def _openai_chat(record: Record) -> dict[str, Any]:
    resp = _response(record)
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise FormatError("bad_format:openai-chat", "response has no choices[0]")
    message = _dict(choices[0].get("message"))
    output = _text_of(message.get("content"))
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output = f"{reasoning}\n\n{output}"
    event = _common(record)
    event["output"] = output
    if resp.get("system_fingerprint") and event.get("teacher_version"):
        event["teacher_version"] = f"{event['teacher_version']}/{resp['system_fingerprint']}"
    return _with_prompt(event, _prompt(_turns(_request(record).get("messages"))))


def _openai_responses(record: Record) -> dict[str, Any]:
    resp = _response(record)
    items = resp.get("output")
    if not isinstance(items, list):
        raise FormatError("bad_format:openai-responses", "response has no output list")
    texts: list[str] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "reasoning":
            texts.append(_text_of(item.get("summary")))
        elif item.get("type") == "message":
            texts.append(_text_of(item.get("content")))
    event = _common(record)
    event["output"] = "\n\n".join(t for t in texts if t)
    req = _request(record)
    system = [("system", req["instructions"])] if isinstance(req.get("instructions"), str) else []
    return _with_prompt(event, _prompt(system + _turns(req.get("input"))))


def _anthropic(record: Record) -> dict[str, Any]:
    resp = _response(record)
    content = resp.get("content")
    if not isinstance(content, list):
        raise FormatError("bad_format:anthropic", "response has no content list")
    texts = [b.get("thinking") if b.get("type") == "thinking" else b.get("text")
             for b in content if isinstance(b, Mapping)]
    event = _common(record)
    event["output"] = "\n\n".join(t for t in texts if isinstance(t, str) and t)
    req = _request(record)
    system = [("system", _text_of(req.get("system")))]
    return _with_prompt(event, _prompt(system + _turns(req.get("messages"))))


_ADAPTERS: dict[str, Callable[[Record], Mapping[str, Any]]] = {
    "event": lambda record: record,
    "openai-chat": _openai_chat,
    "openai-responses": _openai_responses,
    "anthropic": _anthropic,
}

#: Rejection reasons the formats add to :data:`stream.events.REJECTION_REASONS`.
FORMAT_REASONS = ("not_object", *(f"bad_format:{name}" for name in _ADAPTERS if name != "event"))
