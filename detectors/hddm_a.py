"""HDDM_A: Hoeffding-bound drift detection on a bounded (binary) rate, with plain-float state."""

from __future__ import annotations

import math
from typing import Any

from river import base

__all__ = ["HDDMA"]


class HDDMA(base.BinaryDriftAndWarningDetector):
    r"""Drift detection on a rate by Hoeffding bounds on moving averages (HDDM_A).

    A port of River's ``drift.binary.HDDM_A`` (same decisions, checked against it in the
    tests) whose state is six numbers, so it serialises to JSON without River internals
    and runs about 10x faster (River clones ``stats.Mean`` objects on every update).

    Parameters
    ----------
    drift_confidence
        Confidence of the drift test, in (0, 1).
    warning_confidence
        Confidence of the warning test, in (``drift_confidence``, 1).
    two_sided_test
        Also detect a falling rate (River's default tests only a rise).

    Notes
    -----
    With $\hat z_n$ the mean of all $n$ inputs and $\hat x_{cut}$ the mean up to the cut
    point that minimises $\hat x + \epsilon_x$, a rise is declared when
    $\hat z_n - \hat x_{cut} \ge \sqrt{\tfrac{m}{2}\ln\tfrac{2}{\alpha}}$ with
    $m = \tfrac{n - n_{cut}}{n_{cut}\, n}$. :attr:`statistic` is that difference and
    :attr:`threshold` the bound. The detector resets on the update after a drift.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(42)
    >>> hddm = HDDMA(two_sided_test=True)
    >>> stream = rng.choices([0, 1], [0.9, 0.1], k=1000) + rng.choices([0, 1], [0.6, 0.4], k=1000)
    >>> for i, x in enumerate(stream):
    ...     if hddm.update(x).drift_detected:
    ...         print(f"Change detected at index {i}")
    Change detected at index 1074

    >>> HDDMA(drift_confidence=0.1, warning_confidence=0.01)
    Traceback (most recent call last):
    ...
    ValueError: need 0 < drift_confidence (0.1) < warning_confidence (0.01) < 1

    References
    ----------
    [^1]: Frías-Blanco, del Campo-Ávila, Ramos-Jiménez, Morales-Bueno, Ortiz-Díaz,
    Caballero-Mota. "Online and non-parametric drift detection methods based on
    Hoeffding's bounds." IEEE TKDE 27(3), 2015.
    """

    _FIELDS = ("_zn", "_zm", "_minn", "_minm", "_maxn", "_maxm")

    def __init__(self, drift_confidence: float = 0.001, warning_confidence: float = 0.005,
                 two_sided_test: bool = False):
        super().__init__()
        if not 0 < drift_confidence < warning_confidence < 1:
            raise ValueError(f"need 0 < drift_confidence ({drift_confidence}) < "
                             f"warning_confidence ({warning_confidence}) < 1")
        self.drift_confidence = drift_confidence
        self.warning_confidence = warning_confidence
        self.two_sided_test = two_sided_test
        self._log_d = math.log(1.0 / drift_confidence)
        self._log2_d = math.log(2.0 / drift_confidence)
        self._log2_w = math.log(2.0 / warning_confidence)
        self._statistic = 0.0
        self._threshold = math.nan
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self._zn, self._zm = 0, 0.0  # count and mean of everything
        self._minn, self._minm = 0, 0.0  # cut for a rising mean
        self._maxn, self._maxm = 0, 0.0  # cut for a falling mean

    @property
    def estimate(self) -> float:
        return self._zm

    @property
    def window_size(self) -> int:
        return self._zn

    @property
    def statistic(self) -> float:
        return self._statistic

    @property
    def threshold(self) -> float:
        return self._threshold

    def update(  # type: ignore[override]  # returns self, River style
            self, x: bool | float) -> HDDMA:
        if self._drift_detected:
            self._reset()
        zn = self._zn = self._zn + 1
        zm = self._zm = self._zm + (float(x) - self._zm) / zn
        if self._minn == 0:
            self._minn, self._minm = zn, zm
        if self._maxn == 0:
            self._maxn, self._maxm = zn, zm
        half_log = 0.5 * self._log_d
        eps_z = math.sqrt(half_log / zn)
        if self._minm + math.sqrt(half_log / self._minn) >= zm + eps_z:
            self._minn, self._minm = zn, zm
        if self._maxm - math.sqrt(half_log / self._maxn) <= zm - eps_z:
            self._maxn, self._maxm = zn, zm
        drift = warn = False
        if self._minn != zn:  # test for a rise
            m = (zn - self._minn) / self._minn / zn * 0.5
            diff = zm - self._minm
            bound = math.sqrt(m * self._log2_d)
            if diff >= bound:
                drift, self._statistic, self._threshold = True, diff, bound
            elif diff >= math.sqrt(m * self._log2_w):
                warn = True
        if self.two_sided_test and self._maxn != zn:  # test for a fall
            m = (zn - self._maxn) / self._maxn / zn * 0.5
            diff = self._maxm - zm
            bound = math.sqrt(m * self._log2_d)
            if diff >= bound:
                drift, self._statistic, self._threshold = True, diff, bound
            elif diff >= math.sqrt(m * self._log2_w):
                warn = True
        self._drift_detected = drift
        self._warning_detected = warn and not drift
        return self

    def reset(self) -> None:
        """Forget everything."""
        self._reset()

    def to_state(self) -> dict[str, Any]:
        return {
            "params": {"drift_confidence": self.drift_confidence,
                       "warning_confidence": self.warning_confidence,
                       "two_sided_test": self.two_sided_test},
            "core": [getattr(self, f) for f in self._FIELDS],
            "drift": self._drift_detected, "warning": self._warning_detected,
            "statistic": self._statistic,
            "threshold": None if math.isnan(self._threshold) else self._threshold,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> HDDMA:
        d = cls(**state["params"])
        for f, v in zip(cls._FIELDS, state["core"], strict=True):
            setattr(d, f, v)
        d._drift_detected, d._warning_detected = state["drift"], state["warning"]
        d._statistic = state["statistic"]
        d._threshold = math.nan if state["threshold"] is None else state["threshold"]
        return d
