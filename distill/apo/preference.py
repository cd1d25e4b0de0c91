"""From a :class:`~distill.groups.TeacherGroup` and its consensus positive to a preference
group: 1 positive over N negatives (the teachers' raw trajectories), each with a weight.

Weights (``APOConfig.weighting``):

* ``uniform``: every negative 1, as in the paper.
* ``drift``: ``w_u = (1 + drift_weight_scale * evidence_u) * c_u``, where ``evidence_u`` in
  [0, 1] is teacher u's drift evidence when the group completed and ``c_u`` is
  ``consensus_weight`` if u's answer is the consensus (every consensus label, for
  structured answers), else 1. A drifting teacher's trajectory is pushed down harder; one
  that still agrees with the consensus is pushed down less (it is a worse sample than the
  consensus, but not a wrong one).

The positive is scored on the plain prompt, WITHOUT the teachers in context. Ground truth
is never read here.

Examples
--------
>>> from distill.groups import Consensus, DriftState, TeacherAnswer, TeacherGroup
>>> g = TeacherGroup("s1", "Is 7 prime?", "complete",
...     [TeacherAnswer("a", "e1", "Final answer: yes", "yes"),
...      TeacherAnswer("b", "e2", "Final answer: no", "no")],
...     Consensus("yes", 1, False),
...     {"a": DriftState(0.0, False), "b": DriftState(1.0, True)})
>>> negative_weights(g, "drift", consensus_weight=0.5, drift_weight_scale=2.0)
[0.5, 3.0]
>>> negative_weights(g, "uniform")
[1.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.groups import TeacherGroup


@dataclass(frozen=True, slots=True)
class PreferenceGroup:
    """One APO training example; ``fallback`` says the positive is a teacher's trajectory."""

    sample_id: str
    prompt: str
    positive: str
    negatives: tuple[str, ...]
    teachers: tuple[str, ...]
    weights: tuple[float, ...]
    consensus: str | None
    fallback: bool = False


def negative_weights(group: TeacherGroup, weighting: str, consensus_weight: float = 0.5,
                     drift_weight_scale: float = 2.0) -> list[float]:
    """One weight per answer of ``group`` (same order); see the module docstring."""
    if weighting == "uniform":
        return [1.0] * len(group.answers)
    if weighting != "drift":
        raise ValueError(f"weighting: {weighting!r} is not one of ['uniform', 'drift']")
    out = []
    for a in group.answers:
        state = group.drift.get(a.teacher)
        evidence = min(max(state.evidence, 0.0), 1.0) if state else 0.0
        agrees = group.consensus.agrees(a.answer, a.labels)
        out.append((1.0 + drift_weight_scale * evidence) * (consensus_weight if agrees else 1.0))
    return out


def build_preference_group(group: TeacherGroup, positive: str, *, fallback: bool = False,
                           weighting: str = "uniform", consensus_weight: float = 0.5,
                           drift_weight_scale: float = 2.0) -> PreferenceGroup:
    """Pair the consensus ``positive`` with every teacher trajectory of ``group``.

    A teacher trajectory identical to the positive (the source of a fallback positive) is
    left out: as a negative it would only cancel against the positive.
    """
    weights = negative_weights(group, weighting, consensus_weight, drift_weight_scale)
    kept = [(a, w) for a, w in zip(group.answers, weights, strict=True) if a.output != positive]
    return PreferenceGroup(
        sample_id=group.sample_id, prompt=group.prompt or "", positive=positive,
        negatives=tuple(a.output for a, _ in kept), teachers=tuple(a.teacher for a, _ in kept),
        weights=tuple(w for _, w in kept), consensus=group.consensus.answer, fallback=fallback)
