"""Consensus over teacher answers: plain majority vote, or a vote weighted per teacher.

Weighted voting is how drift-aware consensus down-weights teachers the detectors flag.
Ties are recorded, not hidden: the winner of a tie is the smallest answer string, so the
result is deterministic.

>>> majority({"a": "yes", "b": "yes", "c": "no", "d": None})
Consensus(answer='yes', support=2, tie=False)
>>> majority({"a": "yes", "b": "no"})
Consensus(answer='no', support=1, tie=True)
>>> weighted_vote({"a": "yes", "b": "no", "c": "no"}, {"b": 0.2, "c": 0.2})
Consensus(answer='yes', support=1, tie=False)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping

from distill.groups import Consensus


def majority(answers: Mapping[str, str | None]) -> Consensus:
    """Majority over the teachers that gave an answer."""
    counts = Counter(a for a in answers.values() if a is not None)
    if not counts:
        return Consensus(None, support=0, tie=False)
    top = max(counts.values())
    winners = sorted(a for a, c in counts.items() if c == top)
    return Consensus(winners[0], support=top, tie=len(winners) > 1)


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
