"""Per-event signals the drift detectors watch, cheap enough for tens of thousands of events/s.

Every teacher event gives its own signals at once (:data:`OWN_SIGNALS`); the peer-relative
ones (:data:`PEER_SIGNALS`) need the other teachers' outputs for the same sample, so they
are computed when the sample's group is joined (:func:`leave_one_out_agreement`,
:func:`peer_signals`) and reach the bank in a separate update. Comparing a teacher with
its peers on the same sample cancels what every teacher shares (the prompt mix, a task
change) and the prompt's own variance.

- ``length``: whitespace-separated words of the trajectory (no tokenizer needed);
- ``answer``: the final answer, canonical spelling (None when there is none: two silent
  teachers must not count as agreeing);
- ``refusal``: 1 when the text opens with a refusal (a reply without an extractable answer
  is not a refusal: open-ended tasks have none);
- ``format``: 1 when the trajectory states its answer in a recognised format;
- ``vocab``: whitespace-token frequencies hashed (CRC32, stable across processes) into
  ``hist_bins``;
- ``rel_length``: log(1 + words) minus the median of the peers' on the same sample;
- ``peer_distance``: cosine distance of the output's embedding to the peers' centroid;
- ``agreement``: 1 when the answer equals the peers' plurality answer (see below).

>>> from datetime import UTC, datetime
>>> from stream.events import TeacherEvent
>>> ev = TeacherEvent("e1", "s1", "gpt", "Two plus two. Final answer: 4", datetime.now(UTC))
>>> s = event_signals(ev, hist_bins=8)
>>> s["length"], s["answer"], s["refusal"], s["format"], len(s["vocab"]), round(sum(s["vocab"]), 6)
(6, '4', 0, 1, 8, 1.0)
>>> round(peer_signals({"a": 9, "b": 9, "c": 99})["c"]["rel_length"], 4)  # log(100/10)
2.3026
>>> leave_one_out_agreement({"a": "Yes", "b": "yes", "c": "yes", "d": "no", "e": None})
{'a': 1, 'b': 1, 'c': 1, 'd': 0, 'e': None}
>>> leave_one_out_agreement({"a": "yes", "b": "yes", "c": "no"})  # c's others agree; a's tie
{'a': None, 'b': None, 'c': 0}
"""

from __future__ import annotations

import math
import statistics
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from stream.answers import extract_answer
from stream.cext import optional_extension
from stream.events import TeacherEvent

OWN_SIGNALS = ("length", "answer", "refusal", "format", "vocab", "embedding")
"""Signals of one output alone (``embedding`` only where an embedder is configured)."""
PEER_SIGNALS = ("agreement", "rel_length", "peer_distance")
"""Signals of one output relative to the other teachers' outputs for the same sample."""
SIGNALS = ("length", "answer", "refusal", "format", "vocab", "agreement", "rel_length",
           "peer_distance", "embedding")
MAX_VOCAB_TOKENS = 1024  # the histogram of a long trajectory is settled well before this
_CACHE_LIMIT = 200_000

SignalValue = float | int | str | tuple[float, ...] | None

_REFUSALS = ("i'm sorry", "i am sorry", "i'm unable", "i am unable", "i'm not able",
             "i am not able", "i cannot", "i can't", "as an ai", "i must decline",
             "i don't feel comfortable", "i do not feel comfortable", "i won't be able")
_REFUSAL_HEAD = 400  # refusals open the reply; scanning the head keeps this O(1)
# Answer markers, the substrings of stream.answers' patterns (a plain `in` is ~50x faster).
_FORMATS = ("final answer", "\\boxed{", "[yes]", "[no]", "answer is", '"answer"')


class _TokenBins(dict[str, int]):
    """token -> CRC32 bin, filled on first sight (``map(bins.__getitem__, tokens)`` then
    runs in C: 3x faster than counting tokens and looking each up in Python)."""

    __slots__ = ("bins",)

    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins

    def __missing__(self, token: str) -> int:
        if len(self) >= _CACHE_LIMIT:  # bounded: a long-lived daemon sees unbounded vocab
            self.clear()
        b = self[token] = token_bin(token, self.bins)
        return b


_bin_cache: dict[int, _TokenBins] = {}  # bins -> token -> bin


def canonical_answer(answer: str | None) -> str | None:
    """Spelling used to compare answers across teachers: case, ``$``/``,``, ``(B)`` and
    ``18.0`` vs ``18`` do not count as disagreement."""
    if answer is None:
        return None
    text = answer.strip().rstrip(".").strip().strip("()").strip().lower().replace("$", "")
    num = text.replace(",", "")
    try:
        value = float(num)
    except ValueError:
        return text or None
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def event_answer(event: TeacherEvent) -> str | None:
    """The event's answer, or the one extracted from its output."""
    raw = event.answer if event.answer is not None else extract_answer(event.output)
    return canonical_answer(raw)


def token_bin(token: str, bins: int) -> int:
    """Stable hash bin of a token (Python's ``hash`` is salted per process)."""
    return zlib.crc32(token.encode()) % bins


def vocab_histogram(text: str, bins: int) -> tuple[float, ...]:
    """Relative frequencies of lower-cased whitespace tokens, hashed into ``bins``."""
    return _scan(text.lower(), bins, 0, MAX_VOCAB_TOKENS, (), ())[3]


def event_signals(event: TeacherEvent, hist_bins: int = 64) -> dict[str, SignalValue]:
    """Every signal of one event except ``agreement`` (which needs the peers); a value of
    None (no answer) is skipped by the detector bank."""
    words, refusal_hit, format_hit, hist = _scan(
        event.output.lower(), hist_bins, _REFUSAL_HEAD, MAX_VOCAB_TOKENS, _REFUSALS, _FORMATS)
    answer = event_answer(event)
    return {
        "length": words,
        "answer": answer,
        "refusal": int(refusal_hit),
        "format": int(format_hit),
        "vocab": hist,
    }


def _scan_py(low: str, bins: int, head: int, max_tokens: int, refusals: tuple[str, ...],
             formats: tuple[str, ...]) -> tuple[int, bool, bool, tuple[float, ...]]:
    """The text signals of a lower-cased output: word count, a refusal in its first
    ``head`` characters, an answer format anywhere, and the hashed histogram of its first
    ``max_tokens`` words. The reference for the C scanner (``stream/_textscan.c``), which
    must return exactly this."""
    tokens = low.split()
    return (len(tokens), _contains_any(low[:head], refusals), _contains_any(low, formats),
            _histogram(tokens[:max_tokens], bins))


def _histogram(tokens: list[str], bins: int) -> tuple[float, ...]:
    if not tokens:
        return (0.0,) * bins  # an empty text has an all-zero histogram
    cache = _bin_cache.get(bins)
    if cache is None:
        cache = _bin_cache[bins] = _TokenBins(bins)
    ids = np.fromiter(map(cache.__getitem__, tokens), np.intp, len(tokens))
    counts = np.bincount(ids, minlength=bins)
    return tuple((counts * (1.0 / len(tokens))).tolist())


def _contains_any(text: str, needles: tuple[str, ...]) -> bool:
    for needle in needles:  # noqa: SIM110 (a plain loop: 3x cheaper than any() here)
        if needle in text:
            return True
    return False


# the same scan in C, built by `pip install` where a compiler is present (stream/cext.py)
_textscan = optional_extension("stream._textscan")
_scan = _scan_py if _textscan is None else _textscan.scan
SCANNER: Literal["c", "python"] = "python" if _textscan is None else "c"


def leave_one_out_agreement(answers: Mapping[str, str | None]) -> dict[str, int | None]:
    """Teacher -> 1 if its answer equals the plurality answer of the OTHER teachers, 0 if
    not, None if it has no answer or the others have none or tie at the top."""
    canon = {t: canonical_answer(a) for t, a in answers.items()}
    counts = Counter(a for a in canon.values() if a is not None)
    out: dict[str, int | None] = {}
    for teacher, mine in canon.items():
        if mine is None:
            out[teacher] = None
            continue
        counts[mine] -= 1
        top = counts.most_common(2)
        counts[mine] += 1
        if not top or top[0][1] == 0 or (len(top) > 1 and top[1][1] == top[0][1]):
            out[teacher] = None
        else:
            out[teacher] = int(top[0][0] == mine)
    return out


def peer_signals(lengths: Mapping[str, int],
                 embeddings: Mapping[str, Sequence[float] | None] | None = None,
                 ) -> dict[str, dict[str, float | None]]:
    """Teacher -> ``rel_length`` and ``peer_distance`` from one closed group's rows (words
    and optional unit-norm embeddings per teacher); None where the teacher has no peer
    (or no peer with an embedding)."""
    logs = {t: math.log1p(n) for t, n in lengths.items()}
    embeddings = embeddings or {}
    vecs = {t: np.asarray(v, dtype=float) for t, v in embeddings.items() if v is not None}
    out: dict[str, dict[str, float | None]] = {}
    for teacher, mine in logs.items():
        others = [x for t, x in logs.items() if t != teacher]
        rel = mine - statistics.median(others) if others else None
        out[teacher] = {"rel_length": rel, "peer_distance": _peer_distance(teacher, vecs)}
    return out


def _peer_distance(teacher: str, vecs: Mapping[str, np.ndarray]) -> float | None:
    mine = vecs.get(teacher)
    peers = [v for t, v in vecs.items() if t != teacher]
    if mine is None or not peers:
        return None
    centroid = np.mean(peers, axis=0)
    norm = float(np.linalg.norm(centroid) * np.linalg.norm(mine))
    return 1.0 - float(mine @ centroid) / norm if norm > 0 else None
