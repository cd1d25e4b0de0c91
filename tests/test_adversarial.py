"""Hot-path parsing is linear in its input: 1 MiB adversarial strings finish quickly.

A quadratic pattern takes minutes to hours on these inputs (32k spaces took 18 s before
the answer patterns were rewritten), so the generous bound below only fails on a
complexity regression, never on a slow machine."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest

from stream.answers import extract_answer
from stream.events import TeacherEvent, decode_event
from stream.signals import canonical_answer, event_signals

MiB = 1 << 20
BOUND_S = 1.0  # linear scans of 1 MiB take milliseconds; a quadratic one takes hours


def _fill(unit: str, prefix: str = "", suffix: str = "") -> str:
    return prefix + unit * ((MiB - len(prefix) - len(suffix)) // len(unit)) + suffix


ADVERSARIAL = {
    "spaces": _fill(" "),
    "final_answer_spaces": _fill(" ", "Final answer:", "x"),
    "final_answer_spaces_no_colon": _fill(" ", "Final answer", "x"),
    "final_answer_tabs_newlines": _fill(" \t\r\n", "final answer -"),
    "answer_is_spaces": _fill(" ", "the answer is", "!"),
    "answer_is_colon_spaces": _fill(" ", "the answer is:", " ("),
    "repeated_final_answer": _fill("final answer:"),
    "repeated_answer_is": _fill("answer is "),
    "nested_braces": _fill("{"),
    "nested_boxed": _fill("\\boxed{"),
    "nested_brackets": _fill("["),
    "brackets_yes": _fill("[yes"),
    "json_unterminated": _fill("a", '{"answer": "'),
    "json_escapes": _fill("\\\\", '{"answer": "'),
    "json_key_spaces": _fill(" ", '"answer"', ":"),
    "repeated_json_keys": _fill('"answer": "'),
    "separators": _fill(", "),
    "colons": _fill(":"),
    "dashes": _fill("-"),
    "digits": _fill("9"),
    "newlines": _fill("\n"),
    "refusal_head": _fill("i cannot ", "I'm sorry, "),
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_every_extractor_and_signal_is_linear_on_adversarial_text(name: str) -> None:
    text = ADVERSARIAL[name]
    event = TeacherEvent("e", "s", "t", text, datetime(2026, 1, 1, tzinfo=UTC))
    raw = orjson.dumps({"event_id": "e", "sample_id": "s", "teacher": "t", "output": text,
                        "produced_at": "2026-01-01T00:00:00Z"})
    for fn, arg in ((extract_answer, text), (canonical_answer, text),
                    (lambda e: event_signals(e, 64), event),
                    (lambda r: decode_event(r, 2 * MiB), raw)):
        started = time.perf_counter()
        fn(arg)
        elapsed = time.perf_counter() - started
        assert elapsed < BOUND_S, f"{name}: {elapsed:.2f} s on 1 MiB"
