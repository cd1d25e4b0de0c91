"""The teacher-output event: one teacher's answer to one case.

Decoding never raises on bad input. It returns either a :class:`TeacherEvent` or an
:class:`Invalid` that carries a machine-readable reason (``not_json``,
``missing_field:<name>``, ``bad_type:<name>``, ``too_large``, ``bad_timestamp``, ...).
That reason becomes the dead-letter header and the ``reason`` label of the metric, so
the set of reasons must stay small and bounded.

>>> ev = decode_event(b'{"event_id": "e1", "sample_id": "s1", "teacher": "gpt", '
...                   b'"output": "Final answer: yes", "produced_at": "2026-01-01T00:00:00Z"}')
>>> ev.teacher, ev.produced_at.year
('gpt', 2026)
>>> decode_event(b"{oops").reason
'not_json'
>>> decode_event(b'{"event_id": "e1"}').reason
'missing_field:sample_id'
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from stream.images import ImageRef

DEFAULT_MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB; the embedded broker enforces no limit, so we do.

REQUIRED_STR_FIELDS = ("event_id", "sample_id", "teacher", "output")
OPTIONAL_STR_FIELDS = ("teacher_version", "prompt", "image", "answer")
OPTIONAL_DICT_FIELDS = ("labels", "meta")
MAX_ID_CHARS = 512


@dataclass(frozen=True, slots=True)
class Invalid:
    """A rejected message: ``reason`` is a bounded machine-readable code, ``detail`` free text."""

    reason: str
    detail: str = ""

    def __bool__(self) -> bool:  # an Invalid is falsy, so `if decoded:` reads naturally
        return False


@dataclass(frozen=True, slots=True)
class TeacherEvent:
    """One teacher answer, validated. ``produced_at`` is timezone-aware (UTC if none given)."""

    event_id: str
    sample_id: str
    teacher: str
    output: str
    produced_at: datetime
    teacher_version: str | None = None
    prompt: str | None = None
    image: str | None = None
    answer: str | None = None
    labels: dict[str, Any] | None = None
    ground_truth: Any = None
    meta: dict[str, Any] | None = field(default=None)
    images: tuple[ImageRef, ...] | None = None  # by reference only (stream.images)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; optional fields that are None are left out."""
        d = {name: getattr(self, name) for name in _FIELD_NAMES}
        d["produced_at"] = format_timestamp(self.produced_at)
        if self.images is not None:
            d["images"] = [ref.to_dict() for ref in self.images]
        return {k: v for k, v in d.items() if v is not None}

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())


_FIELD_NAMES = tuple(f.name for f in fields(TeacherEvent))


def format_timestamp(ts: datetime) -> str:
    """RFC 3339 with a ``Z`` suffix for UTC."""
    if ts.tzinfo is not UTC:  # parsed "Z" and "+00:00" times already are (the hot path)
        ts = ts.astimezone(UTC)
    # the text of ts.isoformat() with Z for +00:00, from orjson: 4x faster (once per event)
    return orjson.dumps(ts, option=orjson.OPT_UTC_Z)[1:-1].decode()


def parse_timestamp(value: str) -> datetime | None:
    """Parse an RFC 3339 timestamp; None when it is not one or has no UTC equivalent.
    Naive times are taken as UTC.

    ``9999-12-31T23:59:59-14:00`` parses but lies past ``datetime.max`` in UTC, where every
    later conversion would raise ``OverflowError``; it is rejected here, once.

    >>> parse_timestamp("9999-12-31T23:59:59-14:00") is None
    True
    """
    try:
        ts = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    if ts.utcoffset():
        try:
            ts.astimezone(UTC)
        except OverflowError:
            return None
    return ts


def decode_event(
    raw: bytes | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> TeacherEvent | Invalid:
    """Decode and validate one message value; never raises on bad input."""
    if raw is None:
        return Invalid("empty", "message has no value")
    if len(raw) > max_bytes:
        return Invalid("too_large", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        obj = orjson.loads(raw)  # strict: invalid UTF-8, NaN and deep nesting are rejected
    except orjson.JSONDecodeError as exc:
        return Invalid("not_json", str(exc)[:200])
    if not isinstance(obj, dict):
        return Invalid("not_object", f"top-level JSON is {type(obj).__name__}")
    return validate_event(obj)


def validate_event(obj: dict[str, Any]) -> TeacherEvent | Invalid:
    """Check fields and types of a decoded JSON object."""
    event = _valid_event(obj)
    if event is None:
        return _reject(obj)
    return event if obj.get("images") is None else _with_images(event, obj["images"])


def _with_images(event: TeacherEvent, value: Any) -> TeacherEvent | Invalid:
    """The event with its image references, or ``bad_image`` (see :mod:`stream.images`)."""
    from stream.images import parse_image_refs  # imports this module: import here

    refs = parse_image_refs(value)
    return refs if isinstance(refs, Invalid) else replace(event, images=refs)


def _valid_event(obj: dict[str, Any]) -> TeacherEvent | None:
    """The common case in one pass: every check passes. None sends the object through
    :func:`_reject`, which finds the first failing check in the documented order."""
    get = obj.get
    ids: tuple[Any, Any, Any] = (get("event_id"), get("sample_id"), get("teacher"))
    output, stamp = get("output"), get("produced_at")
    if not isinstance(output, str) or not isinstance(stamp, str):
        return None
    for value in ids:
        if not isinstance(value, str) or len(value) > MAX_ID_CHARS or not value.strip():
            return None
    optional = [get(name) for name in _OPTIONAL_FIELDS]
    for value, kind in zip(optional, _OPTIONAL_KINDS, strict=True):
        if value is not None and not isinstance(value, kind):
            return None
    produced_at = parse_timestamp(stamp)
    if produced_at is None:
        return None
    version, prompt, image, answer, labels, meta = optional
    return TeacherEvent(event_id=ids[0], sample_id=ids[1], teacher=ids[2], output=output,
                        produced_at=produced_at, teacher_version=version, prompt=prompt,
                        image=image, answer=answer, labels=labels,
                        ground_truth=get("ground_truth"), meta=meta)


_OPTIONAL_FIELDS = (*OPTIONAL_STR_FIELDS, *OPTIONAL_DICT_FIELDS)
_OPTIONAL_KINDS = (str,) * len(OPTIONAL_STR_FIELDS) + (dict,) * len(OPTIONAL_DICT_FIELDS)


def _reject(obj: dict[str, Any]) -> Invalid:
    for name in (*REQUIRED_STR_FIELDS, "produced_at"):
        if name not in obj or obj[name] is None:
            return Invalid(f"missing_field:{name}")
    for name in (*REQUIRED_STR_FIELDS, "produced_at"):
        if not isinstance(obj[name], str):
            return Invalid(f"bad_type:{name}", f"expected string, got {type(obj[name]).__name__}")
    for name in ("event_id", "sample_id", "teacher"):
        if not obj[name].strip() or len(obj[name]) > MAX_ID_CHARS:
            return Invalid(f"bad_value:{name}", "empty or longer than 512 characters")
    for name in OPTIONAL_STR_FIELDS:
        if obj.get(name) is not None and not isinstance(obj[name], str):
            return Invalid(f"bad_type:{name}", f"expected string, got {type(obj[name]).__name__}")
    for name in OPTIONAL_DICT_FIELDS:
        if obj.get(name) is not None and not isinstance(obj[name], dict):
            return Invalid(f"bad_type:{name}", f"expected object, got {type(obj[name]).__name__}")
    return Invalid("bad_timestamp", repr(obj["produced_at"])[:100])  # all else passed


def internal_error(exc: BaseException) -> Invalid:
    """The dead-letter reason of a record whose processing raised unexpectedly: one reason
    per exception type (a bounded set: the types the code can raise)."""
    return Invalid(f"internal_error:{type(exc).__name__}", str(exc)[:200])


#: Reasons the monitor refuses a well-formed event for: older than the watermark allows, stamped
#: further ahead of the clock than the allowed skew, a new teacher name past the tracked cap.
ADMISSION_REASONS = ("late", "future_timestamp", "teacher_overflow")

#: Every reason prefix `decode_event` can return; used to pre-create metric label children.
REJECTION_REASONS = (
    "empty",
    "too_large",
    "not_json",
    "not_object",
    *(f"missing_field:{n}" for n in (*REQUIRED_STR_FIELDS, "produced_at")),
    *(f"bad_type:{n}" for n in (*REQUIRED_STR_FIELDS, "produced_at")),
    *(f"bad_type:{n}" for n in (*OPTIONAL_STR_FIELDS, *OPTIONAL_DICT_FIELDS)),
    *(f"bad_value:{n}" for n in ("event_id", "sample_id", "teacher")),
    "bad_timestamp",
    "bad_image",  # the images field (stream.images)
    "image_outside_roots",  # serve confines image references to its roots (stream.images)
)
