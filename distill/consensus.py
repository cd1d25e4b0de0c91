"""Consensus over teacher answers: plain majority vote, or a vote weighted per teacher.

Weighted voting is how drift-aware consensus down-weights teachers the detectors flag.
Ties are recorded, not hidden: the winner of a tie is the smallest answer string, so the
result is deterministic.

>>> majority({"a": "yes", "b": "yes", "c": "no", "d": None})
Consensus(answer='yes', support=2, tie=False, labels=None)
>>> majority({"a": "yes", "b": "no"})
Consensus(answer='no', support=1, tie=True, labels=None)
>>> weighted_vote({"a": "yes", "b": "no", "c": "no"}, {"b": 0.2, "c": 0.2})
Consensus(answer='yes', support=1, tie=False, labels=None)
>>> label_majority({"a": {"x": "up", "y": "flat"}, "b": {"x": "up", "y": "down"},
...                 "c": {"x": "down", "y": "down"}, "d": None})
{'x': 'up', 'y': 'down'}
>>> label_agreement({"a": {"x": "up"}, "b": {"x": "up"}, "c": {"x": "down"}})
{'a': None, 'b': None, 'c': 0.0}
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping

from distill.groups import Consensus


def majority(answers: Mapping[str, str | None],
             labels: dict[str, str] | None = None) -> Consensus:
    """Majority over the teachers that gave an answer; ``labels``, the per-key majority of
    structured answers, is carried along."""
    counts = Counter(a for a in answers.values() if a is not None)
    if not counts:
        return Consensus(None, support=0, tie=False, labels=labels)
    top = max(counts.values())
    winners = sorted(a for a, c in counts.items() if c == top)
    return Consensus(winners[0], support=top, tie=len(winners) > 1, labels=labels)


def weighted_vote(answers: Mapping[str, str | None],
                  weights: Mapping[str, float]) -> Consensus:
    """Vote where teacher ``t`` counts ``weights.get(t, 1.0)``; support is the raw count."""
    score: dict[str, float] = defaultdict(float)
    for teacher, answer in answers.items():
        if answer is not None:
            score[answer] += weights.get(teacher, 1.0)
    if not score:
        return Consensus(None, support=0, tie=False)
    top = max(score.values())
    winners = sorted(a for a, s in score.items() if abs(s - top) < 1e-12)
    support = sum(1 for a in answers.values() if a == winners[0])
    return Consensus(winners[0], support=support, tie=len(winners) > 1)


def label_majority(labels: Mapping[str, Mapping[str, str] | None]) -> dict[str, str] | None:
    """Per-key majority over structured answers (e.g. one label per finding); a tied key
    takes the smallest label so the result is deterministic."""
    return LabelVotes(labels).majority()


def label_agreement(labels: Mapping[str, Mapping[str, str] | None]) -> dict[str, float | None]:
    """Per teacher, the fraction of its labels that equal the strict plurality of the OTHER
    teachers' labels for the same key (keys where the others tie are left out); None when
    no key can be judged. The structured form of leave-one-out agreement: with five
    findings, whole answers rarely have a plurality, single findings almost always do."""
    return LabelVotes(labels).agreement()


class LabelVotes:
    """The label counts of one group, counted once for both the majority and the
    leave-one-out agreement (this runs once per group on the monitor's hot path)."""

    __slots__ = ("counts", "labels")

    def __init__(self, labels: Mapping[str, Mapping[str, str] | None]) -> None:
        self.labels: dict[str, dict[str, str] | None] = {}
        # key -> label -> count; plain dicts (a Counter's __missing__ is a Python call)
        self.counts: dict[str, dict[str, int]] = {}
        for teacher, answer in labels.items():
            if not answer:
                self.labels[teacher] = None
                continue
            mine = self.labels[teacher] = {}
            for key, raw in answer.items():
                value = mine[key] = raw if type(raw) is str else str(raw)
                per_key = self.counts.get(key)
                if per_key is None:
                    self.counts[key] = {value: 1}
                else:
                    per_key[value] = per_key.get(value, 0) + 1

    def majority(self) -> dict[str, str] | None:
        if not self.counts:
            return None
        out = {}
        for key in sorted(self.counts):
            counts = self.counts[key]
            top = max(counts.values())
            out[key] = min(v for v, c in counts.items() if c == top)
        return out

    def agreement(self) -> dict[str, float | None]:
        # the others' strict plurality depends only on (key, own value): one per pair
        others_top: dict[tuple[str, str], str | None] = {}
        for key, counts in self.counts.items():
            for value in counts:
                counts[value] -= 1
                others_top[key, value] = _strict_top(counts)
                counts[value] += 1
        out: dict[str, float | None] = {}
        for teacher, mine in self.labels.items():
            hits, judged = 0, 0
            for key, value in (mine or {}).items():
                top = others_top[key, value]
                if top is not None:
                    judged += 1
                    hits += top == value
            out[teacher] = hits / judged if judged else None
        return out


def _strict_top(counts: dict[str, int]) -> str | None:
    """The value with the strictly highest positive count, or None on a tie or when empty."""
    best, best_n, tied = None, 0, False
    for value, n in counts.items():
        if n > best_n:
            best, best_n, tied = value, n, False
        elif n == best_n and n > 0:
            tied = True
    return None if tied else best
