"""Per-event signals and leave-one-out agreement."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.cext import NO_C_EXT_ENV, c_extensions_enabled
from stream.events import TeacherEvent
from stream.signals import (
    OWN_SIGNALS,
    SCANNER,
    SIGNALS,
    _scan_py,
    canonical_answer,
    event_signals,
    leave_one_out_agreement,
    vocab_histogram,
)


def _event(output: str, answer: str | None = None) -> TeacherEvent:
    return TeacherEvent("e", "s", "t", output, datetime(2026, 1, 1, tzinfo=UTC), answer=answer)


def test_signal_names_are_the_fixed_label_set() -> None:
    assert SIGNALS == ("length", "answer", "refusal", "format", "vocab", "agreement",
                       "rel_length", "peer_distance", "embedding")
    assert set(event_signals(_event("x"))) == set(OWN_SIGNALS) - {"embedding"}


def test_answer_comes_from_the_event_or_the_output() -> None:
    assert event_signals(_event("blah", answer="(B)"))["answer"] == "b"
    assert event_signals(_event("so \\boxed{18.0}"))["answer"] == "18"
    assert event_signals(_event('{"reasoning": "x", "answer": "1,200"}'))["answer"] == "1200"


def test_refusal_phrasing_is_a_refusal_and_answer_none() -> None:
    s = event_signals(_event("I'm sorry, but I can't help with that."))
    assert (s["answer"], s["refusal"], s["format"]) == (None, 1, 0)


def test_an_answer_without_an_extractable_answer_is_not_a_refusal() -> None:
    s = event_signals(_event("Here is a short poem about the sea, in four lines."))
    assert (s["answer"], s["refusal"]) == (None, 0)


def test_refusal_phrasing_counts_even_with_an_answer() -> None:
    s = event_signals(_event("As an AI language model I cannot judge. Final answer: no"))
    assert (s["answer"], s["refusal"], s["format"]) == ("no", 1, 1)


def test_format_flags_a_stated_answer_in_the_text() -> None:
    assert event_signals(_event("it is prime", answer="yes"))["format"] == 0
    assert event_signals(_event("it is prime [Yes]", answer="yes"))["format"] == 1


def test_vocab_histogram_is_normalised_and_stable_across_processes() -> None:
    h = vocab_histogram("the cat the dog", 16)
    assert len(h) == 16 and sum(h) == pytest.approx(1.0) and max(h) >= 0.5
    assert vocab_histogram("", 16) == (0.0,) * 16
    code = "from stream.signals import vocab_histogram as v; print(v('the cat the dog', 16))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123"})
    assert other.stdout.strip() == str(h)


def test_length_counts_words() -> None:
    assert event_signals(_event("one two\nthree   four"))["length"] == 4


@pytest.mark.parametrize(("answers", "expected"), [
    ({"a": "yes", "b": "yes", "c": "yes", "d": "no"}, {"a": 1, "b": 1, "c": 1, "d": 0}),
    ({"a": "yes", "b": "no"}, {"a": 0, "b": 0}),
    ({"a": "yes", "b": "yes", "c": "no"}, {"a": None, "b": None, "c": 0}),  # a's others tie
    ({"a": "yes", "b": None, "c": None}, {"a": None, "b": None, "c": None}),
    ({"a": "18", "b": "18.0", "c": "$18"}, {"a": 1, "b": 1, "c": 1}),
    ({"solo": "x"}, {"solo": None}),
])
def test_leave_one_out_agreement(answers: dict, expected: dict) -> None:
    assert leave_one_out_agreement(answers) == expected


def test_canonical_answer() -> None:
    assert canonical_answer(" (C). ") == "c"
    assert canonical_answer("1,000") == "1000"
    assert canonical_answer("0.5") == "0.5"
    assert canonical_answer("   ") is None


# -- the C text scan (stream/_textscan.c) against its Python reference --------------------

_WORDS = st.sampled_from(["final answer", "\\boxed{", "i cannot", "answer is", "as an ai",
                          "é", "漢字", "🙂", "ß", "Σ", "x"])
_SPACES = st.sampled_from([" ", "\t", "\n", "\x0b", "\x1c", "\x1f", "\x85", "\u00a0",
                           "\u2028", "\u3000", "\u200b"])  # \u200b is not whitespace
_TEXTS = st.lists(st.one_of(_WORDS, _SPACES, st.text(max_size=6)), max_size=40).map("".join)


# importable whenever built (the switch only stops the product from using it)
try:
    from stream import _textscan as textscan
except ImportError:  # a build without a C compiler: the equality tests have nothing to test
    textscan = None
needs_c_scan = pytest.mark.skipif(textscan is None, reason="stream._textscan is not built")


@pytest.mark.skipif(not c_extensions_enabled(), reason="DISTILL_NO_C_EXT forces the Python scan")
def test_the_c_scanner_is_built() -> None:
    """`pip install` builds it where a compiler is present (CI has one); without it serve
    falls back to the Python scan, several times slower."""
    assert SCANNER == "c"


def test_the_switch_forces_every_python_fallback() -> None:
    """DISTILL_NO_C_EXT=1 in a fresh process: the scan and the KL sums are the Python ones."""
    code = ("from stream import signals; from detectors import kl_window; "
            "print(signals.SCANNER, kl_window.KERNELS, "
            "kl_window._histogram_sums is kl_window._histogram_sums_py)")
    env = {**os.environ, NO_C_EXT_ENV: "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["python", "python", "True"]


@needs_c_scan
@settings(max_examples=400, deadline=None)
@given(text=_TEXTS, bins=st.integers(1, 70), head=st.integers(0, 50),
       max_tokens=st.integers(0, 12), refusals=st.lists(_WORDS, max_size=4),
       formats=st.lists(_WORDS | st.just(""), max_size=4))
def test_c_scanner_equals_the_python_scan(text: str, bins: int, head: int, max_tokens: int,
                                          refusals: list[str], formats: list[str]) -> None:
    low = text.lower()
    args = (low, bins, head, max_tokens, tuple(refusals), tuple(formats))
    assert textscan.scan(*args) == _scan_py(*args)


@needs_c_scan
def test_c_scanner_rejects_what_python_rejects() -> None:
    for scan in (textscan.scan, _scan_py):
        with pytest.raises(UnicodeEncodeError):
            scan("a \ud800 b", 8, 10, 10, (), ())
    with pytest.raises(ValueError, match="bins"):
        textscan.scan("a", 0, 10, 10, (), ())
    with pytest.raises(TypeError, match="tuple of str"):
        textscan.scan("a", 8, 10, 10, ("a", b"b"), ())
