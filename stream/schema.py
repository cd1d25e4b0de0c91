"""The published event contract: a versioned JSON Schema built from the decoder's own definition.

The schema is generated from :class:`stream.events.TeacherEvent`'s fields and the constants
:func:`stream.events.decode_event` checks against (required and optional field lists, the id
length limit), so the two cannot drift apart; ``FIELD_DOCS`` adds a description and an example
per field, and generation fails when a field has none. The generated file is committed as
``stream/schemas/teacher-event.v1.json`` (a test keeps it equal to the generator's output);
regenerate it with ``python -m stream.schema``.

Where the two differ, the decoder is the more lenient reader: it also takes the other ISO 8601
forms Python's ``datetime.fromisoformat`` parses (``20260101T000000Z``, a bare date), and the
schema's timestamp pattern checks the shape of a date, not the calendar (``2026-02-30``). The
size limit (``serve.max_message_bytes``) is not a schema property.

>>> schema = event_schema()
>>> schema["required"]
['event_id', 'sample_id', 'teacher', 'output', 'produced_at']
>>> schema["properties"]["sample_id"]["maxLength"]
512
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from importlib import resources
from typing import Any

from stream.events import (
    MAX_ID_CHARS,
    OPTIONAL_DICT_FIELDS,
    OPTIONAL_STR_FIELDS,
    REQUIRED_STR_FIELDS,
    TeacherEvent,
)

SCHEMA_VERSION = 1
SCHEMA_FILE = f"teacher-event.v{SCHEMA_VERSION}.json"
ID_FIELDS = ("event_id", "sample_id", "teacher")
#: RFC 3339 date-time; a missing offset is read as UTC (the decoder's rule).
TIMESTAMP_PATTERN = (r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[T ]"
                     r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
                     r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$")

#: What each field is for, and one example value: the docs render these.
FIELD_DOCS: dict[str, tuple[str, Any]] = {
    "event_id": ("Unique id of this answer; the monitor drops repeats (dedup), so a "
                 "deterministic id makes re-sending idempotent.", "chatcmpl-9f1c2"),
    "sample_id": ("The case every teacher answers; the join key and the Kafka message key.",
                  "case-000042"),
    "teacher": ("Stable name of the teacher stream (one per model you compare).", "gpt-4o"),
    "output": ("The teacher's full answer: reasoning trajectory and final answer.",
               "The opacity is unchanged. Final answer: stable"),
    "produced_at": ("When the teacher answered, RFC 3339 (no offset means UTC).",
                    "2026-03-01T12:00:00Z"),
    "teacher_version": ("The model version the API reported (e.g. a dated snapshot or "
                        "system fingerprint); drift alerts show it.", "gpt-4o-2024-08-06"),
    "prompt": ("The prompt the teachers answered; training uses it as the student's input.",
               "Compare the two chest X-rays: is the consolidation improving?"),
    "image": ("URI of the case's image, for multimodal teachers.",
              "s3://bucket/cases/000042.png"),
    "answer": ("The final answer; extracted from `output` when absent.", "stable"),
    "labels": ("Structured answer, e.g. one label per finding.",
               {"consolidation": "stable", "edema": "worsening"}),
    "ground_truth": ("Known correct answer; only for experiments, never used in training.",
                     "stable"),
    "meta": ("Free-form context kept with the event (latency, cost, request id ...).",
             {"latency_ms": 812}),
    "images": ("The case's images by reference (never inline): a URI under the monitor's "
               "image roots and the SHA-256 of the bytes; see docs/multimodal.md.",
               [{"uri": "case-000042/prior.png", "sha256": "9f2c" * 16}]),
}


def event_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one teacher-output event."""
    names = [f.name for f in fields(TeacherEvent)]
    missing = [n for n in names if n not in FIELD_DOCS]
    if missing:
        raise ValueError(f"FIELD_DOCS has no entry for TeacherEvent field(s) {missing}")
    required = [*REQUIRED_STR_FIELDS, "produced_at"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_FILE,
        "title": f"drift-distill teacher-output event, version {SCHEMA_VERSION}",
        "description": "One teacher's answer to one case. Produce it to the input topic with "
                       "the Kafka key set to sample_id. Unknown fields are ignored.",
        "type": "object",
        "required": required,
        "properties": {name: _property(name) for name in names},
        "additionalProperties": True,
    }


def _property(name: str) -> dict[str, Any]:
    description, example = FIELD_DOCS[name]
    prop: dict[str, Any] = {"description": description, "examples": [example]}
    if name in ID_FIELDS:
        prop.update(type="string", minLength=1, maxLength=MAX_ID_CHARS, pattern=r"\S")
    elif name == "produced_at":
        prop.update(type="string", format="date-time", pattern=TIMESTAMP_PATTERN)
    elif name in REQUIRED_STR_FIELDS:
        prop.update(type="string")
    elif name in OPTIONAL_STR_FIELDS:
        prop.update(type=["string", "null"])
    elif name in OPTIONAL_DICT_FIELDS:
        prop.update(type=["object", "null"])
    elif name == "images":
        prop.update(_images_property())
    return prop  # anything else (ground_truth) takes any JSON value


def _images_property() -> dict[str, Any]:
    """The shape :func:`stream.images.parse_image_refs` accepts (roots are serve's check)."""
    from stream.images import MAX_IMAGES, MAX_URI_CHARS

    ref = {"type": "object", "required": ["uri", "sha256"],
           "properties": {"uri": {"type": "string", "minLength": 1, "maxLength": MAX_URI_CHARS},
                          "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}}}
    return {"type": ["array", "null"], "maxItems": MAX_IMAGES, "items": ref}


def example_event() -> dict[str, Any]:
    """One complete event built from the per-field examples."""
    return {name: example for name, (_, example) in FIELD_DOCS.items()}


def render() -> str:
    """The schema file's text (stable key order, trailing newline)."""
    return json.dumps(event_schema(), indent=2, ensure_ascii=False) + "\n"


def published_schema() -> dict[str, Any]:
    """The committed schema file, as installed with the package."""
    text = resources.files("stream").joinpath("schemas", SCHEMA_FILE).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


if __name__ == "__main__":  # python -m stream.schema > stream/schemas/teacher-event.v1.json
    sys.stdout.write(render())
