"""Consensus synthesis (keep / fall back / count) and preference-group weighting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from toy_groups import parity_groups

from distill.apo.config import APOConfig
from distill.apo.preference import build_preference_group, negative_weights
from distill.apo.synthesis import best_supported, hf_generate_fn, synthesize
from distill.apo.training import make_preference_groups
from distill.groups import Consensus, DriftState, TeacherAnswer, TeacherGroup

pytestmark = pytest.mark.train
TEMPLATE = "Q: {prompt}\n{trajectories}\nA:"
TRAJ = "- {output}\n"


def _echo_consensus(prompts: list[str]) -> list[str]:
    """Deterministic 'student': agrees with the majority on even x, contradicts it on odd."""
    out = []
    for p in prompts:
        x = int(p.split("Is ")[1].split(" ")[0])
        out.append("Merged. Final answer: yes" if x % 2 == 0 else "Merged. Final answer: maybe")
    return out


def test_synthesis_keeps_agreeing_answers_and_counts_fallbacks() -> None:
    groups = parity_groups(8, seed=3)
    made = synthesize(groups, _echo_consensus, template=TEMPLATE, trajectory_template=TRAJ)
    for g, s in zip(groups, made, strict=True):
        if g.consensus.answer == "yes":
            assert (s.positive, s.fallback) == ("Merged. Final answer: yes", False)
        else:
            assert s.fallback and s.positive == best_supported(g).output
    assert sum(s.fallback for s in made) == sum(g.consensus.answer != "yes" for g in groups)


def test_synthesis_prompt_follows_the_configured_template_with_every_trajectory() -> None:
    seen: list[str] = []
    group = parity_groups(1)[0]
    synthesize([group], lambda ps: seen.extend(ps) or ["x"] * len(ps), template=TEMPLATE,
               trajectory_template=TRAJ, max_chars=12)
    assert seen[0].startswith(f"Q: {group.prompt}\n") and seen[0].endswith("\nA:")
    assert seen[0].count("\n- ") == len(group.answers)
    assert all(f"- {a.output[:12]}\n" in seen[0] for a in group.answers)


def test_fallback_prefers_undrifted_agreeing_teacher_without_ground_truth() -> None:
    answers = [TeacherAnswer("a", "1", "even, so yes. Final answer: yes", "yes"),
               TeacherAnswer("b", "2", "it is even, so yes. Final answer: yes", "yes"),
               TeacherAnswer("c", "3", "odd. Final answer: no", "no")]
    group = TeacherGroup("s", "Is 4 even?", "complete", answers, Consensus("yes", 2, False),
                         {"a": DriftState(0.7, True), "b": DriftState(0.1, False),
                          "c": DriftState(0.0, False)}, ground_truth="no")
    assert best_supported(group).teacher == "b"


def _structured_group() -> TeacherGroup:
    """Four teachers' two-finding answers; the monitor decided each finding on its own
    (``labels``), while its whole-answer string is a tie won by a teacher that agrees
    with neither decided label."""
    said = {"a": "edema=stable; pneumonia=worsening", "b": "pneumonia=worsening; edema=stable",
            "c": "edema=stable; pneumonia=stable", "d": "edema=improving; pneumonia=stable"}
    answers = [TeacherAnswer(t, t, f"{t} reasons. Final answer: {ans}", ans,
                             dict(p.split("=") for p in ans.split("; ")))
               for t, ans in said.items()]
    consensus = Consensus(said["d"], 1, True, {"edema": "stable", "pneumonia": "worsening"})
    drift = {t: DriftState(0.1 if t == "a" else 0.0, False) for t in said}
    return TeacherGroup("s", "p", "complete", answers, consensus, drift)


def test_structured_answers_are_judged_by_the_consensus_labels_not_the_answer_string(
) -> None:
    from distill.apo.evaluate import _questions
    from distill.apo.synthesis import choose_positive

    group = _structured_group()
    # The positive states every decided label (b: a's labels in another order, less drift).
    assert best_supported(group).teacher == "b"
    kept = "Merged. Final answer: pneumonia=worsening; edema=stable"
    assert choose_positive(group, kept) == (kept, False)
    assert choose_positive(group, "Final answer: " + group.consensus.answer) == (
        group.answers[1].output, True)
    # Negatives that state the decided labels are the ones spared.
    w = negative_weights(group, "drift", consensus_weight=0.5, drift_weight_scale=0.0)
    assert w == [0.5, 0.5, 1.0, 1.0]
    # The gate's per-finding questions are scored against the decided labels.
    decided = {key: c for key, _, c, _ in _questions(group) if key.startswith("finding:")}
    assert decided == {"finding:edema": "stable", "finding:pneumonia": "worsening"}
    # Where no answer states every decided label, the one stating the most wins.
    partial = TeacherGroup("s", "p", "complete", [group.answers[2], group.answers[3]],
                           group.consensus, group.drift)
    assert best_supported(partial).teacher == "c"


def _drift_group() -> TeacherGroup:
    answers = [TeacherAnswer(t, t, f"{t} says. Final answer: {a}", a)
               for t, a in (("calm", "yes"), ("agreeing_drifter", "yes"), ("drifter", "no"))]
    drift = {"calm": DriftState(0.0, False), "agreeing_drifter": DriftState(1.0, True),
             "drifter": DriftState(1.0, True)}
    return TeacherGroup("s", "p", "complete", answers, Consensus("yes", 2, False), drift)


def test_drift_weights_grow_with_evidence_and_spare_consensus_agreement() -> None:
    w = dict(zip(["calm", "agreeing_drifter", "drifter"],
                 negative_weights(_drift_group(), "drift", consensus_weight=0.25,
                                  drift_weight_scale=3.0), strict=True))
    assert w == {"calm": 0.25, "agreeing_drifter": 1.0, "drifter": 4.0}
    assert negative_weights(_drift_group(), "uniform") == [1.0, 1.0, 1.0]


def test_preference_group_negatives_are_raw_teacher_trajectories() -> None:
    group = _drift_group()
    pref = build_preference_group(group, "Merged. Final answer: yes", weighting="drift")
    assert pref.prompt == "p"  # scored on the plain prompt, no teachers in context
    assert pref.negatives == tuple(a.output for a in group.answers)
    fallback = build_preference_group(group, group.answers[0].output, fallback=True)
    assert group.answers[0].output not in fallback.negatives and len(fallback.negatives) == 2


@pytest.fixture()
def one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_real_tiny_student_generates_and_round_counts_its_fallbacks(
        tmp_path: Path, one_thread: None) -> None:
    from distill.apo.student import load_student
    from distill.apo.tiny import build_tiny_student

    groups = parity_groups(3)
    texts = [g.prompt or "" for g in groups] + [a.output for g in groups for a in g.answers]
    model, tok = load_student(build_tiny_student(tmp_path / "s", texts))
    outs = hf_generate_fn(model, tok, max_new_tokens=5, max_prompt_tokens=64)(["a", "b c"])
    assert len(outs) == 2 and all(isinstance(o, str) for o in outs)
    config = APOConfig(output_dir=str(tmp_path / "hf"), synthesis_max_new_tokens=5)
    prefs = make_preference_groups(groups, config, model, tok)
    assert len(prefs) == 3
    for p, g in zip(prefs, groups, strict=True):  # a random model never states the answer
        assert p.fallback and p.positive == best_supported(g).output
