"""Final-answer extraction from a reasoning trajectory, for events that carry no ``answer``.

The patterns cover the formats teachers use in practice: ``Final answer: X``, LaTeX
``\\boxed{X}``, bracket tags ``[Yes]``, a JSON ``{"answer": ...}`` object and "the answer
is X". The last match wins, because trajectories often restate options before answering.

Every pattern runs in time linear in the output, whatever its content: whitespace runs are
taken by possessive quantifiers (``\\s*+``), so a failed match never retries the ways of
splitting a run, and a captured line is trimmed in Python rather than by a lazy ``.+?\\s*$``
(which is quadratic on long runs of spaces). ``tests/test_adversarial.py`` feeds 1 MiB
adversarial strings to hold this.

>>> extract_answer("Reasoning... Final answer: pneumonia=worsening")
'pneumonia=worsening'
>>> extract_answer("so we get \\\\boxed{42}.")
'42'
>>> extract_answer('{"reasoning": "2+2", "answer": "4"}')
'4'
>>> extract_answer("Final answer: 4\\nFinal answer:   ")  # an empty restatement is skipped
'4'
>>> extract_answer("I cannot help with that.") is None
True
>>> parse_labels("edema=stable; pneumonia = worsening")
{'edema': 'stable', 'pneumonia': 'worsening'}
>>> parse_labels("42") is None
True
"""

from __future__ import annotations

import json
import re

_FINAL_LINE = re.compile(r"final answer\s*+[:\-]\s*+([^\n]*)", re.IGNORECASE)
_PATTERNS = (
    re.compile(r"\\boxed\{([^{}]{1,64})\}"),
    re.compile(r"\[(yes|no)\]", re.IGNORECASE),
    re.compile(r"answer is\s*+[:\(]?\s*+\(?([A-Za-z0-9.\-]{1,32})\)?", re.IGNORECASE),
)
_JSON_ANSWER = re.compile(r'"answer"\s*+:\s*+("(?:[^"\\]++|\\.)*+"|-?[0-9.]++)')


def extract_answer(output: str) -> str | None:
    """Best-effort final answer, normalised (stripped, trailing period removed), or None."""
    lines = [line for line in _FINAL_LINE.findall(output) if not line.isspace() and line]
    if lines:
        return normalise_answer(lines[-1])
    for pattern in _PATTERNS:
        matches = pattern.findall(output)
        if matches:
            return normalise_answer(matches[-1])
    m = _JSON_ANSWER.findall(output)
    if m:
        try:
            value = json.loads(m[-1])
        except json.JSONDecodeError:
            return None
        return normalise_answer(str(value))
    return None


def normalise_answer(answer: str) -> str | None:
    """Canonical spelling for comparing answers across teachers."""
    text = answer.strip().rstrip(".").strip()
    return text or None


def parse_labels(answer: str | None) -> dict[str, str] | None:
    """Structured labels from an answer of ``key=value`` pairs separated by ``;`` (the
    multi-finding final line); None unless every part is such a pair."""
    if not answer:
        return None
    out = {}
    for part in answer.split(";"):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            return None
        out[key] = value
    return out
