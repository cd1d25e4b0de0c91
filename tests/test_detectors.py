"""Every detector through the same checks (River style), with detection indices pinned on
seeded streams built once at module level."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import river
from river import drift

from detectors import ADWIN, HDDMA, BankConfig, KLWindow, StateRiverMismatch
from detectors.state import detector_from_state

rng = random.Random(12345)
MEAN_SHIFT = [rng.gauss(0, 1) for _ in range(1000)] + [rng.gauss(1, 1) for _ in range(1000)]
BINARY = rng.choices([0, 1], [0.8, 0.2], k=1000) + rng.choices([0, 1], [0.5, 0.5], k=1000)
FLIP = ([rng.choice("aab") for _ in range(700)] + [rng.choice("abb") for _ in range(700)]
        + [rng.choice("aab") for _ in range(700)])


def hits(det, xs) -> list[int]:
    return [i for i, x in enumerate(xs) if det.update(x).drift_detected]


# kind (the state registry's name) -> (factory, a stream with a shift, where it shifts)
DETECTORS = {
    "adwin": (ADWIN, MEAN_SHIFT),
    "hddm_a": (lambda: HDDMA(two_sided_test=True), BINARY),
    "kl_window": (lambda: KLWindow(bins=4), FLIP),
}
SHIFT_AT = {"adwin": 1000, "hddm_a": 1000, "kl_window": 700}


@pytest.mark.parametrize(("factory", "stream", "expected"), [
    (ADWIN, MEAN_SHIFT, [1055, 1119, 1183]),
    (ADWIN, BINARY, [1087, 1119, 1151, 1375]),
    (lambda: HDDMA(two_sided_test=True), BINARY, [1038]),
    (HDDMA, BINARY, [1038]),
    (lambda: HDDMA(two_sided_test=True), [x == "b" for x in FLIP], [747, 1488]),
    (lambda: KLWindow(bins=2), FLIP, [749, 1439]),
])
def test_pinned_detection_indices(factory, stream, expected) -> None:
    assert hits(factory(), stream) == expected


@pytest.mark.parametrize("kind", DETECTORS)
def test_detector_finds_the_known_shift(kind: str) -> None:
    factory, stream = DETECTORS[kind]
    found = hits(factory(), stream)
    assert found and SHIFT_AT[kind] <= found[0] < SHIFT_AT[kind] + 150


@pytest.mark.parametrize("kind", DETECTORS)
def test_detector_is_silent_on_constant_input(kind: str) -> None:
    factory, stream = DETECTORS[kind]
    assert hits(factory(), [stream[0]] * 5000) == []


@pytest.mark.parametrize("kind", DETECTORS)
def test_detector_state_round_trip_gives_identical_future(kind: str) -> None:
    factory, stream = DETECTORS[kind]
    a = factory()
    for x in stream[:900]:
        a.update(x)
    b = detector_from_state(kind, json.loads(json.dumps(a.to_state())))
    assert hits(a, stream[900:]) == hits(b, stream[900:])


@pytest.mark.parametrize("kind", DETECTORS)
def test_detector_exposes_readonly_extras(kind: str) -> None:
    factory, stream = DETECTORS[kind]
    det = factory()
    for x in stream[:1200]:
        det.update(x)
    for name in ("drift_detected", "statistic", "threshold", "estimate"):
        with pytest.raises(AttributeError):
            setattr(det, name, 1)
    assert repr(det).startswith(type(det).__name__)
    assert type(det.clone()) is type(det)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_bank_binary_detector_stays_within_budget_on_100k_stationary(rate: float) -> None:
    """As the bank configures it; 0.5 false alarms per 10k is 5 in 100k."""
    bits = (np.random.default_rng(1).random(100_000) < rate).tolist()
    assert len(hits(BankConfig().make("refusal"), bits)) <= 5


def test_bank_length_detector_stays_within_budget_on_100k_stationary() -> None:
    lengths = np.log1p(np.random.default_rng(0).lognormal(5, 0.6, 100_000)).tolist()
    assert len(hits(BankConfig().make("length"), lengths)) <= 5


def test_hddm_a_matches_river() -> None:
    for seed in range(3):
        r = random.Random(seed)
        xs = r.choices([0, 1], [0.9, 0.1], k=1500) + r.choices([0, 1], [0.6, 0.4], k=500)
        ours, theirs = HDDMA(two_sided_test=True), drift.binary.HDDMA(two_sided_test=True)
        for x in xs:
            ours.update(x)
            theirs.update(x)
            assert (ours.drift_detected, ours.warning_detected) == (
                theirs.drift_detected, theirs.warning_detected)


def test_adwin_keeps_the_recent_window_after_a_detection() -> None:
    """River's drift.ADWIN empties its window on the update after a detection; ours keeps
    the post-change sub-window, as ADWIN proper does."""
    ours, theirs = ADWIN(), drift.ADWIN()
    for x in MEAN_SHIFT[:1056]:
        ours.update(x)
        theirs.update(x)
    assert ours.drift_detected and theirs.drift_detected
    ours.update(MEAN_SHIFT[1056])
    theirs.update(MEAN_SHIFT[1056])
    assert theirs.width == 1 and ours.window_size > 1
    assert ours.statistic > 0.3 and ours.threshold > 0


def test_adwin_state_refuses_another_river_version() -> None:
    state = ADWIN().update(1.0).to_state()
    state["river"] = "0.0.1"
    with pytest.raises(StateRiverMismatch, match=r"0\.0\.1"):
        ADWIN.from_state(state)
    assert ADWIN().to_state()["river"] == river.__version__


@pytest.mark.parametrize(("factory", "message"), [
    (lambda: ADWIN(delta=0), "delta must be in"),
    (lambda: ADWIN(clock=0), "clock"),
    (lambda: HDDMA(drift_confidence=0.01, warning_confidence=0.001), "drift_confidence"),
    (lambda: KLWindow(bins=1), "bins"),
])
def test_bad_parameters_fail_at_construction(factory, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()
