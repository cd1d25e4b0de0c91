"""KL-window test: detection, calibration against the false-alarm budget, re-anchoring, state."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import kl_window
from detectors.kl_window import KLWindow
from stream.cext import c_extensions_enabled

N_STATIONARY = 100_000


def _detections(det: KLWindow, xs: list) -> list[int]:
    return [i for i, x in enumerate(xs) if det.update(x).drift_detected]


def _docs(rng: np.random.Generator, n: int, tokens: int, zipf: float, bins: int = 64) -> list:
    """Documents of `tokens` words from a Zipf vocabulary, hashed into `bins` frequencies."""
    vocab = 2000
    p = 1.0 / np.arange(1, vocab + 1) ** zipf
    p /= p.sum()
    bin_of = np.random.default_rng(7).integers(0, bins, vocab)
    counts = rng.multinomial(tokens, p, size=n) @ np.eye(bins)[bin_of]
    return [tuple(r) for r in (counts / tokens).tolist()]


def test_kl_window_flags_categorical_shift_after_warmup() -> None:
    rng = np.random.default_rng(0)
    before = rng.choice(4, size=1000, p=[0.4, 0.3, 0.2, 0.1]).tolist()
    after = rng.choice(4, size=1000, p=[0.1, 0.2, 0.3, 0.4]).tolist()
    hits = _detections(KLWindow(bins=4), before + after)
    assert hits and 1000 <= hits[0] < 1100


def test_kl_window_flags_histogram_shift() -> None:
    rng = np.random.default_rng(1)
    xs = _docs(rng, 800, 60, 1.1) + _docs(rng, 800, 60, 0.8)
    hits = _detections(KLWindow(bins=64), xs)
    assert hits and 800 <= hits[0] < 900


def test_kl_window_category_strings_and_ints_both_work() -> None:
    det = KLWindow(bins=8, window_size=20, reference_size=40, test_every=5)
    xs = ["yes"] * 300 + ["no"] * 100
    assert _detections(det, xs)[0] in range(300, 330)


@pytest.mark.parametrize("k", [2, 8, 32])
def test_kl_window_stays_silent_on_stationary_categories(k: int) -> None:
    rng = np.random.default_rng(k)
    xs = rng.choice(k, size=N_STATIONARY, p=rng.dirichlet(np.ones(k) * 2)).tolist()
    det = KLWindow(bins=32, false_alarms_per_10k=0.5)
    assert len(_detections(det, xs)) / N_STATIONARY * 1e4 <= 2 * 0.5


@pytest.mark.parametrize(("k", "budget"), [(2, 20.0), (8, 20.0), (8, 5.0)])
def test_kl_window_false_alarm_rate_within_twice_the_budget(k: int, budget: float) -> None:
    """Calibration: the measured rate is within 2x the budget and the test is not dead
    (Bonferroni over correlated, overlapping tests is conservative by design)."""
    rng = np.random.default_rng(100 + k)
    xs = rng.choice(k, size=N_STATIONARY, p=rng.dirichlet(np.ones(k) * 2)).tolist()
    rate = len(_detections(KLWindow(bins=k, false_alarms_per_10k=budget), xs)) / N_STATIONARY * 1e4
    assert rate <= 2 * budget
    if budget >= 20:
        assert rate > 0


def test_kl_window_histogram_false_alarms_within_budget() -> None:
    rng = np.random.default_rng(3)
    pool = _docs(rng, 2000, 40, 1.0)
    xs = [pool[i] for i in rng.integers(0, len(pool), 30_000)]
    det = KLWindow(bins=64, false_alarms_per_10k=2.0)
    assert len(_detections(det, xs)) / len(xs) * 1e4 <= 2 * 2.0


def test_kl_window_keeps_pre_drift_reference_and_reanchors() -> None:
    det = KLWindow(bins=2, window_size=50, reference_size=100)
    xs = [i % 4 == 0 for i in range(600)] + [i % 4 != 0 for i in range(3000)]
    hits = _detections(det, xs)
    assert len(hits) == 1 and 600 <= hits[0] < 700  # re-anchored: silent on the new regime
    assert det.reference_before_drift == pytest.approx([0.25, 0.75])  # bins by first sight
    assert det.statistic < det.threshold


def test_kl_window_statistic_and_threshold_are_reported() -> None:
    det = KLWindow(bins=4, window_size=20, reference_size=40, test_every=5)
    for i in range(80):
        det.update(i % 4)
    assert det.current_size == 20 and det.n == 80
    assert det.estimate >= 0 and det.threshold > det.statistic >= 0


def test_kl_window_state_round_trip_continues_identically() -> None:
    rng = np.random.default_rng(5)
    xs = _docs(rng, 500, 30, 1.1) + _docs(rng, 500, 30, 0.7)
    a = KLWindow(bins=64, window_size=40, reference_size=80)
    for x in xs[:333]:
        a.update(x)
    b = KLWindow.from_state(json.loads(json.dumps(a.to_state())))
    trace_a = [(a.update(x).drift_detected, a.statistic) for x in xs[333:]]
    trace_b = [(b.update(x).drift_detected, b.statistic) for x in xs[333:]]
    assert trace_a == trace_b and any(d for d, _ in trace_a)


def test_kl_window_skips_empty_histograms_and_rejects_wrong_length() -> None:
    det = KLWindow(bins=4)
    det.update((0.0, 0.0, 0.0, 0.0))
    assert det.n == 0
    with pytest.raises(ValueError, match="3 bins, expected 4"):
        det.update((0.5, 0.25, 0.25))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"bins": 1}, "bins must be >= 2"),
    ({"window_size": 5}, "window_size must be >= 10"),
    ({"test_every": 0}, "test_every must be in"),
    ({"false_alarms_per_10k": 0}, "false_alarms_per_10k must be in"),
    ({"smoothing": 0}, "smoothing must be > 0"),
])
def test_kl_window_rejects_bad_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KLWindow(**kwargs)


# -- the histogram column sums in C (detectors/_kernels.c) against the Python ones ----------

_WEIGHTS = st.one_of(st.floats(0, 1, allow_nan=False), st.integers(0, 3),
                     st.sampled_from([0.0, -0.0, 1e-300, 0.1, 1 / 3]))


try:  # importable whenever built (the switch only stops the product from using it)
    from detectors import _kernels
except ImportError:  # a build without a C compiler: the equality tests have nothing to test
    _kernels = None
needs_c_kernels = pytest.mark.skipif(_kernels is None, reason="detectors._kernels is not built")


def _c_sums(items: list[tuple[float, ...]], bins: int) -> np.ndarray:
    """The C sums called directly, so they are tested under DISTILL_NO_C_EXT too."""
    return np.frombuffer(_kernels.column_sums(items, bins), dtype=float)


@pytest.mark.skipif(not c_extensions_enabled(), reason="DISTILL_NO_C_EXT forces the Python sums")
def test_the_c_kernels_are_built() -> None:
    """`pip install` builds them where a compiler is present (CI has one)."""
    assert kl_window.KERNELS == "c"
    assert kl_window._histogram_sums is not kl_window._histogram_sums_py


@needs_c_kernels
@settings(max_examples=300, deadline=None)
@given(data=st.data(), bins=st.integers(1, 70), rows=st.integers(1, 12))
def test_c_column_sums_equal_the_python_sums_bit_for_bit(data: st.DataObject, bins: int,
                                                         rows: int) -> None:
    items = [tuple(data.draw(st.lists(_WEIGHTS, min_size=bins, max_size=bins)))
             for _ in range(rows)]
    c = _c_sums(items, bins)
    py = kl_window._histogram_sums_py(items, bins)
    assert c.tobytes() == py.tobytes()  # bit for bit, signed zeros included


@needs_c_kernels
def test_c_column_sums_reject_a_wrong_histogram() -> None:
    with pytest.raises(ValueError, match="item 1 is not a tuple of 3"):
        _c_sums([(0.5, 0.5, 0.0), (1.0,)], 3)
    with pytest.raises(TypeError):
        _c_sums([(0.5, "x", 0.0)], 3)
