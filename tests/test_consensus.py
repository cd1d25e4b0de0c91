"""The reliability-weighted online consensus and its place in the monitor pipeline."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from detectors.bank import DriftRecord
from distill.consensus import (
    ReliabilityConfig,
    ReliabilityConsensus,
    majority,
)
from distill.monitor.pipeline import MonitorPipeline, PipelineConfig
from stream.events import TeacherEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LABELS = ("improving", "stable", "worsening")


def noisy_stream(n: int, accuracy: dict[str, float], seed: int = 0
                 ) -> list[tuple[dict[str, str], str]]:
    """(answers, truth) per case; each teacher right with its accuracy, else uniform."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        truth = rng.choice(LABELS)
        answers = {t: truth if rng.random() < a else rng.choice([x for x in LABELS
                                                                  if x != truth])
                   for t, a in accuracy.items()}
        out.append((answers, truth))
    return out


def test_reliable_minority_beats_the_plain_majority() -> None:
    accuracy = {"good": 0.9, "weak1": 0.45, "weak2": 0.45, "weak3": 0.45, "weak4": 0.45}
    stream = noisy_stream(1500, accuracy)
    rc = ReliabilityConsensus()
    hits_rc = sum(rc.decide(a).answer == t for a, t in stream) / len(stream)
    hits_mv = sum(majority(a).answer == t for a, t in stream) / len(stream)
    assert hits_rc > hits_mv + 0.05
    assert hits_rc >= 0.85  # about the good teacher, learnt without any gold
    assert rc.accuracy("answer", "good") == pytest.approx(0.9, abs=0.07)
    assert rc.accuracy("answer", "weak1") == pytest.approx(0.45, abs=0.07)


def test_per_class_rows_learn_a_swap() -> None:
    """A teacher that says worsening for improving (and back) when wrong is still
    informative on the third class; the confusion rows learn where it errs."""
    rng = random.Random(1)
    rc = ReliabilityConsensus()
    for _ in range(1500):
        truth = rng.choice(LABELS)
        swap = {"improving": "worsening", "worsening": "improving", "stable": "stable"}
        answers = {f"h{i}": truth if rng.random() < 0.75 else rng.choice(LABELS)
                   for i in range(4)}
        answers["swapper"] = swap[truth] if rng.random() < 0.7 else truth
        rc.decide(answers)
    row = rc.keys["answer"].conf["swapper"]
    assert row["improving"].get("worsening", 0) > 1.5 * row["improving"].get("improving", 0)
    assert row["stable"].get("stable", 0) > 0.8 * row["stable"][""]


def test_state_round_trips_through_json() -> None:
    stream = noisy_stream(400, {"a": 0.8, "b": 0.6, "c": 0.5})
    first = ReliabilityConsensus()
    for a, _ in stream[:250]:
        first.decide(a, {t: {"x": v} for t, v in a.items()})
    second = ReliabilityConsensus()
    second.load_state(json.loads(json.dumps(first.to_state())))
    for a, _ in stream[250:]:
        labels = {t: {"x": v} for t, v in a.items()}
        assert first.decide(a, labels) == second.decide(a, labels)
    with pytest.raises(ValueError, match="version"):
        second.load_state({"version": 99})


def test_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match=r"reliability\.prior_accuracy"):
        ReliabilityConfig(prior_accuracy=1.0)


def _event(i: int, teacher: str, answer: str) -> TeacherEvent:
    return TeacherEvent(event_id=f"{i}-{teacher}", sample_id=f"s{i}", teacher=teacher,
                        output=f"Reasoning. Final answer: {answer}",
                        produced_at=T0 + timedelta(seconds=60 * i))


def test_pipeline_decides_with_reliability_and_forgets_on_an_own_history_alert() -> None:
    teachers = ("good", "w1", "w2")
    stream = noisy_stream(300, {"good": 0.95, "w1": 0.4, "w2": 0.4}, seed=3)
    pipeline = MonitorPipeline(PipelineConfig(expected_teachers=teachers))
    groups = pipeline.run([_event(i, t, a[t]) for i, (a, _) in enumerate(stream)
                           for t in teachers]).groups
    truth = [t for _, t in stream]
    decided = sum(g.consensus.answer == t for g, t in zip(groups, truth, strict=True))
    voted = sum(majority({a.teacher: a.answer for a in g.answers}).answer == t
                for g, t in zip(groups, truth, strict=True))
    assert decided > voted
    assert pipeline.consensus.accuracy("answer", "good") > 0.85
    # an alert on the teacher's own signals (not agreement) makes the consensus relearn it
    alert = DriftRecord("good", "length", "adwin", 300, 1.0, 0.5)
    pipeline.bank.update = lambda *args, **kw: [alert]  # type: ignore[method-assign]
    pipeline.process(_event(300, "good", "stable"))
    assert pipeline.consensus.accuracy("answer", "good") == ReliabilityConfig().prior_accuracy
    # and the pipeline's checkpoint carries the consensus
    state = json.loads(json.dumps(pipeline.to_state(), default=str))
    restored = MonitorPipeline(PipelineConfig(expected_teachers=teachers))
    restored.load_state(state)
    assert restored.consensus.to_state() == pipeline.consensus.to_state()


def test_chance_agreement_sets_the_number_of_answers() -> None:
    """Four small numbers plus a few stray words is an open key, but wrong answers still
    coincide one time in three, not one in a hundred; counting them as rare would read
    the weak teachers' chance agreement as skill."""
    options = ["0", "1", "2", "3"]
    accuracy = {"t1": 0.8, "t2": 0.55, "t3": 0.45, "t4": 0.4, "t5": 0.35}
    rng = random.Random(5)
    rc = ReliabilityConsensus()
    for i in range(800):
        truth = rng.choice(options)
        answers = {t: truth if rng.random() < a else rng.choice([o for o in options
                                                                 if o != truth])
                   for t, a in accuracy.items()}
        if i % 40 == 0:
            answers["t5"] = f"stray word {i}"  # 20 distinct strays: the key is open
        rc.decide(answers)
    assert not rc.keys["answer"].closed
    for teacher in ("t2", "t3", "t4", "t5"):
        assert rc.accuracy("answer", teacher) == pytest.approx(accuracy[teacher], abs=0.06)


def test_a_version_1_state_still_loads() -> None:
    stream = noisy_stream(100, {"a": 0.8, "b": 0.6, "c": 0.5, "d": 0.7})
    first = ReliabilityConsensus()
    for a, _ in stream:
        first.decide(a)
    state = json.loads(json.dumps(first.to_state()))
    state["version"] = 1
    for key in state["keys"].values():
        del key["cross"], key["prev"]
    second = ReliabilityConsensus()
    second.load_state(state)
    assert second.decide(stream[0][0]).answer is not None
