"""ADWIN over River's Rust core, without River's reset on the update after a detection."""

from __future__ import annotations

import base64
import math
from importlib.metadata import version
from typing import Any, cast

from river import base
from river._river_rust.drift import AdaptiveWindowing

from detectors.exceptions import StateCorrupt, StateRiverMismatch

# the version River's serialised core belongs to (River pinned exactly; see to_state)
RIVER_VERSION = version("river")

__all__ = ["ADWIN"]


class ADWIN(base.DriftDetector):
    r"""Adaptive windowing (Bifet and Gavaldà) for real-valued signals.

    River's ``drift.ADWIN`` throws its whole window away on the update after a detection.
    ADWIN proper only drops the older sub-window and keeps the recent one, so it is ready
    for the next change at once; this wrapper calls River's Rust core directly to do that.

    Parameters
    ----------
    delta
        Significance of the cut test, in (0, 1).
    clock
        Check for a cut every this many updates.
    max_buckets
        Buckets of each size kept before merging (ADWIN2 compression).
    min_window_length
        Smallest sub-window considered for a cut.
    grace_period
        Updates before the first check.

    Notes
    -----
    A cut between sub-windows $W_0$, $W_1$ of sizes $n_0$, $n_1$ is declared when
    $|\hat\mu_0 - \hat\mu_1| > \epsilon_{cut}$, with $m = 1/(1/n_0 + 1/n_1)$,
    $\delta' = \delta / \ln n$ and
    $\epsilon_{cut} = \sqrt{\tfrac{2}{m}\sigma^2 \ln\tfrac{2}{\delta'}}
    + \tfrac{2}{3m}\ln\tfrac{2}{\delta'}$.
    River's core does not expose the cut, so after a detection :attr:`statistic` is the
    difference between the means of the dropped and the kept parts, and :attr:`threshold`
    the bound above for those sizes with the kept part's variance (an approximation: the
    core tests bucket boundaries one by one with the whole window's variance).

    The state document holds River's serialised core, so it is tied to the River version
    (pinned exactly in ``pyproject.toml``); restoring under another version raises
    :class:`~detectors.exceptions.StateRiverMismatch`.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(12345)
    >>> adwin = ADWIN()
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> for i, x in enumerate(stream):
    ...     if adwin.update(x).drift_detected:
    ...         print(f"Change detected at index {i}, window now {adwin.window_size}")
    Change detected at index 1023, window now 32

    >>> ADWIN(delta=2)
    Traceback (most recent call last):
    ...
    ValueError: delta must be in (0, 1), got 2

    References
    ----------
    [^1]: Albert Bifet and Ricard Gavaldà. "Learning from time-changing data with adaptive
    windowing." SIAM SDM 2007.
    """

    def __init__(self, delta: float = 0.002, clock: int = 32, max_buckets: int = 5,
                 min_window_length: int = 5, grace_period: int = 10):
        super().__init__()
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if clock < 1 or max_buckets < 1 or min_window_length < 1 or grace_period < 0:
            raise ValueError("clock, max_buckets and min_window_length must be >= 1, "
                             "grace_period >= 0")
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self._helper = self._new_helper()
        self._statistic = 0.0
        self._threshold = math.nan
        self._n_prev, self._total_prev = 0.0, 0.0

    def _new_helper(self) -> AdaptiveWindowing:
        return AdaptiveWindowing(delta=self.delta, clock=self.clock,
                                 max_buckets=self.max_buckets,
                                 min_window_length=self.min_window_length,
                                 grace_period=self.grace_period)

    @property
    def estimate(self) -> float:
        """Mean of the current window."""
        w = self._helper.get_width()
        return self._helper.get_total() / w if w else 0.0

    @property
    def window_size(self) -> int:
        return int(self._helper.get_width())

    @property
    def statistic(self) -> float:
        """Shift of the window mean at the last detection."""
        return self._statistic

    @property
    def threshold(self) -> float:
        """Cut bound at the last detection."""
        return self._threshold

    def update(  # type: ignore[override]  # returns self, River style
            self, x: float) -> ADWIN:
        # Our own tallies of the window (cheaper than asking the core before every update);
        # they only serve to describe a cut, and are re-read from the core after one.
        self._drift_detected = self._helper.update(x)
        if self._drift_detected:
            self._after_cut(x)
        else:
            self._n_prev += 1
            self._total_prev += x
        return self

    def _after_cut(self, x: float) -> None:
        # Reconstruct the cut from before/after totals: the dropped part is the old prefix.
        h = self._helper
        n1, total1 = h.get_width(), h.get_total()
        # n_prev / total_prev hold the window before this update
        n0 = max(self._n_prev + 1 - n1, 1)
        total0 = self._total_prev + x - total1
        self._n_prev, self._total_prev = n1, total1
        mu0, mu1 = total0 / n0, total1 / max(n1, 1)
        self._statistic = abs(mu1 - mu0)
        n = n0 + n1
        m = 1.0 / (1.0 / n0 + 1.0 / max(n1, 1))
        d = math.log(2.0 * math.log(n) / self.delta) if n > 1 else math.inf
        var = max(h.get_variance(), 0.0) / max(n1, 1)  # kept window variance (the Rust core
        self._threshold = math.sqrt(2.0 / m * var * d) + 2.0 / (3.0 * m) * d  # sums squares)

    def reset(self) -> None:
        """Forget everything (a fresh window)."""
        self._helper = self._new_helper()
        self._drift_detected = False
        self._n_prev, self._total_prev = 0.0, 0.0

    def to_state(self) -> dict[str, Any]:
        """Parameters plus River's serialised core (valid for this River version only)."""
        blob = cast(bytes, self._helper.__reduce_ex__(4)[2])  # the Rust core's pickled state
        return {
            "params": {k: getattr(self, k) for k in (
                "delta", "clock", "max_buckets", "min_window_length", "grace_period")},
            "river": RIVER_VERSION, "core": base64.b64encode(blob).decode(),
            "drift": self._drift_detected, "statistic": self._statistic,
            "tally": [self._n_prev, self._total_prev],
            "threshold": None if math.isnan(self._threshold) else self._threshold,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ADWIN:
        if state.get("river") != RIVER_VERSION:
            raise StateRiverMismatch(
                f"ADWIN state written by River {state.get('river')}, running {RIVER_VERSION}")
        d = cls(**state["params"])
        try:
            d._helper.__setstate__(base64.b64decode(state["core"]))
        except Exception as exc:  # the Rust core raises its own error types
            raise StateCorrupt(f"ADWIN core does not load: {exc}") from exc
        d._drift_detected = state["drift"]
        d._n_prev, d._total_prev = state["tally"]
        d._statistic = state["statistic"]
        d._threshold = math.nan if state["threshold"] is None else state["threshold"]
        return d
