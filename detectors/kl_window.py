"""KL-window test: a calibrated two-window test for categorical and histogram signals."""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import numpy as np
from river import base
from scipy.stats import chi2

from stream.cext import optional_extension

__all__ = ["KLWindow"]

_EVERY_10K = 10_000
PERMUTATIONS = 256
_MAX_CODES = 10_000  # categories remembered; beyond that the hash alone decides
TAIL_SAFETY = 2.0  # the moment-matched fit is too light far in the tail (measured: 5x)
CALIBRATION = 2.0  # overlapping windows: tests are correlated; measured in tests/test_kl_window.py


def category_bin(x: Hashable, bins: int) -> int:
    """Stable hash bin of a category (CRC32 of its text; Python's hash is salted)."""
    return zlib.crc32(str(x).encode()) % bins


class KLWindow(base.DriftAndWarningDetector):
    r"""Reference window vs current window, D_KL(current || reference), calibrated G-test.

    The first ``reference_size`` updates after an anchor form a frozen reference; the last
    ``window_size`` updates form the current window. Every ``test_every`` updates the
    smoothed divergence is turned into a G statistic and compared with a chi-square
    threshold set from a false-alarm budget. After a drift the reference before it is
    kept (:attr:`reference_before_drift`) and a new reference is anchored on what follows.

    Parameters
    ----------
    bins
        Number of categories. The first ``bins`` distinct categories get a bin each, in
        order of appearance; later ones share bins by a stable hash. A histogram input
        must be a sequence of ``bins`` non-negative weights that sum to 1 (or 0 for an
        empty event, which is skipped).
    window_size
        Events in the current window (>= 10).
    reference_size
        Events in the reference window (>= ``window_size``).
    false_alarms_per_10k
        Budget: expected false alarms per 10,000 updates on stationary input.
    test_every
        Test once every this many updates (1 <= ``test_every`` <= ``window_size``).
    smoothing
        Additive pseudo-count per bin (per effective draw), > 0.

    Notes
    -----
    With reference counts $r$ ($n_0$ events), current counts $c$ ($n_1$ events), pseudo-count
    $a$, $B$ bins and dispersion $\phi$,

    $$p = \frac{c + a\phi}{n_1 + aB\phi},\quad q = \frac{r + a\phi}{n_0 + aB\phi},\quad
      G = \frac{2}{\phi}\,\frac{n_0 n_1}{n_0 + n_1}\,D_{KL}(p \,\|\, q).$$

    For a categorical input ($\phi = 1$), under no change $G \sim \chi^2_{k-1}$ (the
    two-sample G-test), $k$ the bins seen in either window. For histograms each event is a
    probability vector: its coordinates vary less than a single draw would ($\phi$, the
    reference's ratio of observed to multinomial variance, a quasi-likelihood scale) but
    the bins are correlated, so the null is taken from the data instead: when a
    reference is anchored, $G$ is computed over 256 random halvings of it (a permutation
    null) and fitted as $c\,\chi^2_\nu$ by matching mean and variance (Satterthwaite),
    with the variance doubled (``TAIL_SAFETY``) because the fit is too light in the far
    tail: without it, stationary streams of real trajectories raised 5x the budget.

    The threshold comes from the budget $b$ (expected false alarms per $10^4$ updates),
    not from a raw p-value: the test runs $10^4/m$ times per $10^4$ updates, so each test
    gets $\alpha = 2\,b\,m / 10^4$. The union bound alone would use $b\,m/10^4$; the
    overlapping windows make consecutive tests strongly correlated, and the factor 2
    (``CALIBRATION``) was set by measuring stationary multinomial streams, where the rate
    still stays below the budget (``tests/test_kl_window.py``). A warning is raised at
    $100\alpha$.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(12345)
    >>> kl = KLWindow(bins=4)
    >>> stream = (rng.choices("abcd", [4, 3, 2, 1], k=1000)
    ...           + rng.choices("abcd", [1, 2, 3, 4], k=1000))
    >>> for i, x in enumerate(stream):
    ...     if kl.update(x).drift_detected:
    ...         print(f"Change detected at index {i}")
    Change detected at index 1049

    >>> KLWindow(window_size=300, reference_size=100)
    Traceback (most recent call last):
    ...
    ValueError: reference_size (100) must be >= window_size (300)

    References
    ----------
    [^1]: Dasu, Krishnan, Venkatasubramanian, Yi. "An information-theoretic approach to
    detecting changes in multi-dimensional data streams." Interface, 2006.
    [^2]: Sokal and Rohlf, Biometry: the G-test of independence.
    """

    def __init__(
        self,
        bins: int = 16,
        window_size: int = 100,
        reference_size: int = 200,
        false_alarms_per_10k: float = 0.5,
        test_every: int = 10,
        smoothing: float = 0.5,
    ):
        super().__init__()
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        if window_size < 10:
            raise ValueError(f"window_size must be >= 10, got {window_size}")
        if reference_size < window_size:
            raise ValueError(
                f"reference_size ({reference_size}) must be >= window_size ({window_size})")
        if not 1 <= test_every <= window_size:
            raise ValueError(f"test_every must be in [1, window_size], got {test_every}")
        top = _EVERY_10K / test_every / CALIBRATION  # the per-test alpha stays < 1
        if not 0 < false_alarms_per_10k < top:
            raise ValueError(f"false_alarms_per_10k must be in (0, {top:g}),"
                             f" got {false_alarms_per_10k}")
        if smoothing <= 0:
            raise ValueError(f"smoothing must be > 0, got {smoothing}")
        self.bins = bins
        self.window_size = window_size
        self.reference_size = reference_size
        self.false_alarms_per_10k = false_alarms_per_10k
        self.test_every = test_every
        self.smoothing = smoothing
        self._alpha = false_alarms_per_10k * test_every * CALIBRATION / _EVERY_10K
        self._thresholds: dict[float, tuple[float, float]] = {}  # by degrees of freedom
        self._reset()
        self._pre_drift: list[float] | None = None
        self._n = 0
        self._codes: dict[Any, int] = {}  # category -> bin, kept across re-anchors

    def _reset(self) -> None:
        super()._reset()
        self._fill: list[Any] = []  # reference items while the reference fills
        self._ref_counts: np.ndarray | None = None
        self._phi = 1.0
        self._scale, self._dof = 1.0, 0.0  # null of G: scale * chi2(dof); dof 0 = bins seen - 1
        self._log_q: np.ndarray | None = None  # derived from the reference; not in the state
        self._ring: list[Any] = []
        self._pos = 0
        self._cur_counts = np.zeros(self.bins)
        self._pending_in: list[Any] = []
        self._pending_out: list[Any] = []
        self._since_test = 0
        self._statistic = 0.0
        self._threshold = math.nan
        self._kl = 0.0

    # -- public read-only values -------------------------------------------------------
    @property
    def statistic(self) -> float:
        """G statistic of the last test."""
        return self._statistic

    @property
    def threshold(self) -> float:
        """Drift threshold of the last test (chi-square quantile)."""
        return self._threshold

    @property
    def estimate(self) -> float:
        """D_KL(current || reference) in nats at the last test."""
        return self._kl

    @property
    def current_size(self) -> int:
        """Events in the current window (0 while the reference fills)."""
        return len(self._ring)

    @property
    def reference_before_drift(self) -> list[float] | None:
        """Reference distribution in force before the last detected drift."""
        return self._pre_drift

    @property
    def n(self) -> int:
        return self._n

    # -- updates -------------------------------------------------------------------------
    def _item(self, x: Any) -> Any:
        if isinstance(x, tuple | list | np.ndarray):
            if len(x) != self.bins:
                raise ValueError(f"histogram has {len(x)} bins, expected {self.bins}")
            return tuple(x)
        code = self._codes.get(x)
        if code is None:
            code = len(self._codes) if len(self._codes) < self.bins else category_bin(x, self.bins)
            if len(self._codes) < _MAX_CODES:
                self._codes[x] = code
        return code

    def update(  # type: ignore[override]  # returns self, River style
            self, x: Hashable | Sequence[float]) -> KLWindow:
        """Add one category or histogram; empty histograms (all zero) are skipped."""
        if self._drift_detected:
            self._drift_detected = False
        item = self._item(x)
        if isinstance(item, tuple) and not any(item):
            return self
        self._n += 1
        if self._ref_counts is None:
            self._fill.append(item)
            if len(self._fill) >= self.reference_size:
                self._anchor()
            return self
        ring = self._ring
        if isinstance(item, int):  # integer counts are exact in any order: update in place
            counts = self._cur_counts
            if len(ring) < self.window_size:
                ring.append(item)
            else:
                counts[ring[self._pos]] -= 1.0
                ring[self._pos] = item
                self._pos = (self._pos + 1) % self.window_size
            counts[item] += 1.0
        else:
            if len(ring) < self.window_size:
                ring.append(item)
            else:
                self._pending_out.append(ring[self._pos])
                ring[self._pos] = item
                self._pos = (self._pos + 1) % self.window_size
            self._pending_in.append(item)
        self._since_test += 1
        if self._since_test >= self.test_every and len(self._ring) == self.window_size:
            self._test()
        return self

    def _as_matrix(self, items: list[Any]) -> np.ndarray:
        if isinstance(items[0], tuple):
            return np.asarray(items, dtype=float)
        m = np.zeros((len(items), self.bins))
        m[np.arange(len(items)), items] = 1.0
        return m

    def _anchor(self) -> None:
        hist = isinstance(self._fill[0], tuple)
        m = self._as_matrix(self._fill)
        self._ref_counts = m.sum(axis=0)
        self._fill = []
        self._scale, self._dof = 1.0, 0.0
        if hist:
            p = self._ref_counts / len(m)
            spread = 1.0 - float(p @ p)  # multinomial variance summed over bins
            if spread > 0:
                observed = float(np.mean(np.einsum("ij,ij->i", m, m))) - float(p @ p)
                self._phi = min(1.0, max(observed / spread, 1e-3))
            self._scale, self._dof = self._permutation_null(m)

    def _permutation_null(self, m: np.ndarray) -> tuple[float, float]:
        """Fit c * chi2(nu) to G over random halves of the reference (Satterthwaite):
        histogram bins are correlated and over-dispersed, so chi2(bins - 1) is too light."""
        rng = np.random.default_rng(self._n)  # deterministic: restores replay identically
        n, h = len(m), len(m) // 2
        idx = np.argsort(rng.random((PERMUTATIONS, n)), axis=1)
        halves = np.zeros((PERMUTATIONS, n))
        halves[np.arange(PERMUTATIONS)[:, None], idx[:, :h]] = 1.0
        c1 = halves @ m  # one matrix product instead of a (P, h, bins) gather
        c0 = self._ref_counts - c1
        a = self.smoothing * self._phi
        p = (c1 + a) / (h + a * self.bins)
        q = (c0 + a) / (n - h + a * self.bins)
        g = 2.0 * np.sum(p * np.log(p / q), axis=1) * h * (n - h) / n / self._phi
        mean, var = float(np.mean(g)), float(np.var(g))
        if mean <= 0 or var <= 0:
            return 1.0, 0.0
        dof = 2.0 * mean * mean / var / TAIL_SAFETY  # same mean, TAIL_SAFETY x the variance
        return mean / dof, dof

    def _sync(self) -> None:
        if self._pending_in:
            self._cur_counts += self._column_sums(self._pending_in)
        if self._pending_out:
            self._cur_counts -= self._column_sums(self._pending_out)
        self._pending_in, self._pending_out = [], []

    def _column_sums(self, items: list[Any]) -> np.ndarray:
        if isinstance(items[0], tuple):
            return _histogram_sums(items, self.bins)
        sums: np.ndarray = self._as_matrix(items).sum(axis=0)
        return sums

    def _thresholds_for(self, df: float) -> tuple[float, float]:
        thr = self._thresholds.get(df)
        if thr is None:
            thr = self._thresholds[df] = (float(chi2.isf(self._alpha, df)),
                                          float(chi2.isf(min(0.5, 100 * self._alpha), df)))
        return thr

    def _test(self) -> None:
        self._sync()
        self._since_test = 0
        ref = self._ref_counts
        assert ref is not None
        n0, n1 = self.reference_size, self.window_size
        a = self.smoothing * self._phi
        if self._log_q is None:  # fixed while the reference holds
            self._log_q = np.log((ref + a) / (n0 + a * self.bins))
        p = (self._cur_counts + a) / (n1 + a * self.bins)
        kl = float(p @ (np.log(p) - self._log_q))
        if self._dof:
            df: float = self._dof
        else:
            df = max(1, int(np.count_nonzero((ref > 0) | (self._cur_counts > 1e-12))) - 1)
        self._kl = max(kl, 0.0)
        self._statistic = 2.0 * self._kl * n0 * n1 / (n0 + n1) / self._phi
        thr, warn = self._thresholds_for(df)
        self._threshold, warn = thr * self._scale, warn * self._scale
        self._warning_detected = self._statistic > warn
        if self._statistic > self._threshold:
            self._drift_detected = True
            self._warning_detected = False
            self._pre_drift = (ref / n0).tolist()
            stat, thr, kl = self._statistic, self._threshold, self._kl
            self._reset()  # re-anchor: the next reference_size updates form the reference
            self._drift_detected = True
            self._statistic, self._threshold, self._kl = stat, thr, kl

    # -- state ---------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """JSON-able state: parameters plus windows (items as bins or histograms).

        Pending window changes are stored as they are, not folded in: folding them here
        would sum floats in another order than an uninterrupted run, and a restored
        detector must continue bit for bit."""
        return {
            "params": {k: getattr(self, k) for k in (
                "bins", "window_size", "reference_size", "false_alarms_per_10k",
                "test_every", "smoothing")},
            "n": self._n, "drift": self._drift_detected, "warning": self._warning_detected,
            "fill": [_jsonable(i) for i in self._fill],
            "ref_counts": None if self._ref_counts is None else self._ref_counts.tolist(),
            "phi": self._phi, "scale": self._scale, "dof": self._dof,
            "ring": [_jsonable(i) for i in self._ring], "pos": self._pos,
            "cur_counts": self._cur_counts.tolist(), "since_test": self._since_test,
            "pending_in": [_jsonable(i) for i in self._pending_in],
            "pending_out": [_jsonable(i) for i in self._pending_out],
            "statistic": self._statistic, "kl": self._kl,
            "threshold": None if math.isnan(self._threshold) else self._threshold,
            "pre_drift": self._pre_drift,
            "codes": [[k, v] for k, v in self._codes.items()],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> KLWindow:
        """Rebuild a detector from :meth:`to_state`; it continues exactly where it was."""
        d = cls(**state["params"])
        d._n = state["n"]
        d._drift_detected, d._warning_detected = state["drift"], state["warning"]
        d._fill = [_item_from_json(i) for i in state["fill"]]
        rc = state["ref_counts"]
        d._ref_counts = None if rc is None else np.asarray(rc, dtype=float)
        d._phi, d._scale, d._dof = state["phi"], state["scale"], state["dof"]
        d._ring = [_item_from_json(i) for i in state["ring"]]
        d._pos = state["pos"]
        d._cur_counts = np.asarray(state["cur_counts"], dtype=float)
        d._pending_in = [_item_from_json(i) for i in state.get("pending_in", [])]
        d._pending_out = [_item_from_json(i) for i in state.get("pending_out", [])]
        d._since_test = state["since_test"]
        d._statistic, d._kl = state["statistic"], state["kl"]
        d._threshold = math.nan if state["threshold"] is None else state["threshold"]
        d._pre_drift = state["pre_drift"]
        d._codes = {_item_from_json(k): v for k, v in state["codes"]}
        return d


def _histogram_sums_py(items: list[tuple[float, ...]], bins: int) -> np.ndarray:
    """Column sums of histograms, added in list order (5x faster than a float matrix)."""
    return np.fromiter(map(sum, zip(*items, strict=True)), float, bins)


def _histogram_sums_c(items: list[tuple[float, ...]], bins: int) -> np.ndarray:
    """The same sums in C (detectors/_kernels.c), built by `pip install` with a compiler."""
    return np.frombuffer(_kernels.column_sums(items, bins),  # type: ignore[union-attr]
                         dtype=float)  # bound only where _kernels loaded


_kernels = optional_extension("detectors._kernels")  # None: not built, or DISTILL_NO_C_EXT
_histogram_sums = _histogram_sums_py if _kernels is None else _histogram_sums_c
KERNELS: Literal["c", "python"] = "python" if _kernels is None else "c"


def _jsonable(item: Any) -> Any:
    return list(item) if isinstance(item, tuple) else item


def _item_from_json(item: Any) -> Any:
    return tuple(item) if isinstance(item, list) else item
