"""Drift detectors for teacher streams, River style: ``update(x)`` returns the detector,
``drift_detected`` (and ``warning_detected`` where the method has one) are read after.

- :class:`ADWIN`: adaptive windowing over River's core, for real-valued signals (length);
- :class:`HDDMA`: Hoeffding-bound test on a rate, for binary signals;
- :class:`KLWindow`: our calibrated reference-vs-current KL test, for categorical and
  histogram signals;
- :class:`MMDWindow`: kernel two-sample test with a permutation null, for signal vectors;
- :class:`DetectorBank`: per-teacher detectors, teacher-level alarms, JSON state.
"""

from detectors.adwin import ADWIN
from detectors.bank import BankConfig, DetectorBank, DriftRecord, TeacherDriftState
from detectors.exceptions import (
    DetectorError,
    StateCorrupt,
    StateRiverMismatch,
    StateVersionUnsupported,
    UnknownSignal,
)
from detectors.hddm_a import HDDMA
from detectors.kl_window import KLWindow
from detectors.mmd import MMDWindow

__all__ = [
    "ADWIN",
    "HDDMA",
    "BankConfig",
    "DetectorBank",
    "DetectorError",
    "DriftRecord",
    "KLWindow",
    "MMDWindow",
    "StateCorrupt",
    "StateRiverMismatch",
    "StateVersionUnsupported",
    "TeacherDriftState",
    "UnknownSignal",
]
