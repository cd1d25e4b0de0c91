"""The detector bank: alarms, summary, evidence, JSON state, and a simulated scenario."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import (
    BankConfig,
    DetectorBank,
    DriftRecord,
    StateVersionUnsupported,
    UnknownSignal,
)

SMALL = BankConfig(test="univariate", kl_window=20, kl_reference=40, kl_test_every=5, refractory=50,
                   evidence_horizon=50)


def _signals(rng: random.Random, shifted: bool) -> dict:
    """One synthetic event: a teacher that turns verbose, terse in answers, and refuses."""
    vocab = tuple([0.5, 0.5] + [0.0] * 62) if not shifted else tuple([0.0] * 62 + [0.5, 0.5])
    return {"length": rng.randint(300, 400) if shifted else rng.randint(80, 120),
            "answer": rng.choice("ab" if shifted else "abcd"),
            "refusal": int(rng.random() < (0.5 if shifted else 0.02)),
            "format": 1, "vocab": vocab}


def _run(bank: DetectorBank, steps: list[tuple[str, dict]]) -> list[DriftRecord]:
    out = []
    for teacher, signals in steps:
        out += bank.update(teacher, signals)
    return out


def _steps(seed: int, n: int = 400, shift_at: int = 200) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    steps = []
    for i in range(n):
        for teacher in ("a", "b", "c"):
            steps.append((teacher, _signals(rng, teacher == "a" and i >= shift_at)))
        steps.append(("a", {"agreement": int(rng.random() < (0.3 if i >= shift_at else 0.9))}))
    return steps


def test_bank_flags_the_shifted_teacher_once_and_not_the_others() -> None:
    alarms = _run(DetectorBank(SMALL), _steps(0))
    assert [a.teacher for a in alarms] == ["a"]
    assert 200 <= alarms[0].index < 230
    assert alarms[0].statistic > alarms[0].threshold
    json.dumps(alarms[0].to_dict())


def test_agreement_update_does_not_advance_the_event_index() -> None:
    bank = DetectorBank(SMALL)
    bank.update("a", {"length": 10})
    bank.update("a", {"agreement": 1})
    bank.update("a", {"length": 11, "answer": None})
    s = bank.summary()["a"]
    assert s["length"]["n"] == 2 and s["agreement"]["n"] == 1 and s["answer"]["n"] == 0


def test_unknown_signal_is_an_error_naming_it() -> None:
    with pytest.raises(UnknownSignal, match="'mood'"):
        DetectorBank().update("a", {"mood": 1})


def test_summary_has_every_field_per_teacher_and_signal() -> None:
    bank = DetectorBank(SMALL)
    _run(bank, _steps(1, n=260))
    summary = bank.summary()
    assert sorted(summary) == ["a", "b", "c"] and bank.teachers() == ["a", "b", "c"]
    fields = {"n", "estimate", "window_size", "statistic", "threshold", "last_detection",
              "detections", "detector", "live"}
    for signals in summary.values():
        assert set(signals) == {"length", "answer", "refusal", "format", "vocab", "agreement"}
        assert all(set(v) == fields for v in signals.values())
    assert summary["a"]["length"]["detector"] == "adwin"
    assert summary["a"]["vocab"]["detector"] == "kl_window"
    assert summary["a"]["refusal"]["detector"] == "hddm_a"
    assert sum(v["detections"] for v in summary["a"].values()) >= 1
    assert all(v["detections"] == 0 for v in summary["b"].values())
    json.dumps(summary)


def test_drift_state_evidence_rises_at_a_detection_and_decays() -> None:
    bank = DetectorBank(SMALL)
    steps = _steps(2)
    _run(bank, steps[: 4 * 240])
    state = bank.drift_state("a")
    assert state.in_drift and state.evidence == 1.0 and state.signals
    stable = bank.drift_state("b")
    assert not stable.in_drift and stable.evidence <= 0.25 and stable.signals == []
    assert bank.drift_state("nobody").evidence == 0.0
    _run(bank, steps[4 * 240:])  # 160 more events of the new regime: outside the horizon
    later = bank.drift_state("a")
    assert not later.in_drift and 0 < later.evidence < 0.5


def test_agreement_shift_explained_by_another_teachers_alarm() -> None:
    """When teacher a changes, b's leave-one-out majority moves too; that is not b's drift."""
    bank = DetectorBank(SMALL)
    rng = random.Random(3)
    alarms = []
    for i in range(400):
        for teacher in ("a", "b"):
            alarms += bank.update(teacher, _signals(rng, teacher == "a" and i >= 200))
        for teacher in ("a", "b"):
            alarms += bank.update(teacher, {"agreement": int(rng.random() < (0.3 if i >= 200
                                                                               else 0.9))})
    assert {a.teacher for a in alarms} == {"a"}
    assert bank.summary()["b"]["agreement"]["detections"] >= 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"false_alarms_per_10k": 0}, "false_alarms_per_10k"),
    ({"binary_detector": "ddm"}, "binary_detector"),
    ({"kl_window": 300, "kl_reference": 100}, "kl_window"),
    ({"signals": ("length", "mood")}, "unknown signals"),
    ({"adwin_delta": 1.5}, "adwin_delta"),
])
def test_bank_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BankConfig(**kwargs)


def test_state_is_versioned_json_and_refuses_other_versions() -> None:
    bank = DetectorBank(SMALL)
    _run(bank, _steps(4, n=100))
    doc = json.loads(json.dumps(bank.to_state()))
    assert doc["format"] == "drift-distill/detector-bank" and doc["version"] == 2
    assert DetectorBank.from_state(doc).summary() == bank.summary()
    with pytest.raises(StateVersionUnsupported):
        DetectorBank.from_state({**doc, "version": 99})


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), split=st.integers(1, 1599),
       shift_at=st.integers(100, 350))
def test_restored_bank_gives_identical_future_detections(seed: int, split: int,
                                                         shift_at: int) -> None:
    steps = _steps(seed, n=400, shift_at=shift_at)
    live = DetectorBank(SMALL)
    _run(live, steps[:split])
    restored = DetectorBank.from_state(json.loads(json.dumps(live.to_state())))
    future = steps[split:]
    assert _run(live, future) == _run(restored, future)
    assert live.summary() == restored.summary()


def test_bank_on_simulated_scenario_flags_only_scheduled_teachers() -> None:
    """The default scenario through the monitor pipeline (signals, join, agreement), with
    one detector per signal (the joint bank is checked on real data in test_mmd.py)."""
    from distill.monitor.pipeline import MonitorPipeline, PipelineConfig
    from stream.simulator import change_points, generate, load_scenario

    scenario = load_scenario("default")
    changes = {c["teacher"]: c["event_index_of_teacher"] for c in change_points(scenario)}
    teachers = tuple(t.name for t in scenario.teachers)
    pipe = MonitorPipeline(PipelineConfig(bank=BankConfig(test="univariate"),
                                          expected_teachers=teachers))
    alarms = pipe.run(generate(scenario, seed=0)).alerts
    first: dict[str, int] = {}
    for a in alarms:
        first.setdefault(a.teacher, a.index)
    assert set(first) == set(changes)
    for teacher, index in first.items():
        assert changes[teacher] <= index < changes[teacher] + 300


@pytest.mark.parametrize("reanchor", [False, True])
def test_peer_reanchor_lets_a_later_peer_only_change_alarm(reanchor: bool) -> None:
    """Teacher a turns verbose at 200; b's answers stop agreeing with its peers at 260 (its
    own signals unchanged). By default b's peer detection falls in a's evidence horizon and
    is explained away; with ``peer_reanchor`` a's alarm re-anchored b's peer test, whose
    windows then hold no change of a, so b's detection is b's alarm."""
    bank = DetectorBank(BankConfig(peer_reanchor=reanchor))
    rng = random.Random(5)
    teachers = ("a", "b", "c", "d", "e")
    alarms = []
    for i in range(600):
        for t in teachers:
            length = 300 if t == "a" and i >= 200 else 100
            alarms += bank.update(t, {"length": length + rng.randrange(20), "answer": "4"})
        for t in teachers:
            p = 0.2 if t == "b" and i >= 260 else 0.9
            alarms += bank.update(t, {"agreement": int(rng.random() < p),
                                      "rel_length": rng.gauss(0, 0.1)})
    by_teacher = {a.teacher for a in alarms}
    assert "a" in by_teacher
    assert ("b" in by_teacher) == reanchor
    assert bank.summary()["b"]["peer"]["detections"] >= 1
