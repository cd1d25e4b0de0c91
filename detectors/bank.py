"""The detector bank: one detector per (teacher, signal), teacher-level alarms, JSON state.

A teacher's entry appears the first time it is seen. Each update carries some of the
signals of :data:`stream.signals.SIGNALS`; a call that carries anything but
``agreement`` counts as one new event of that teacher, and detections are indexed by the
teacher's event count. Agreement arrives in its own call when the sample's group closes.

Several signals usually react to the same change, and the benchmark (Cerqueira et al.)
counts every alarm after the first as false. So a detection becomes an alarm (a
:class:`DriftRecord` returned by :meth:`DetectorBank.update`) only when the teacher has had
no alarm in the last ``refractory`` events; afterwards the teacher's other detectors are
re-anchored on the new regime (``reset_on_alarm``). Agreement is relational: when one
teacher changes, the leave-one-out majority of every other teacher moves with it. So an
agreement detection is not an alarm while another teacher has alarmed on one of its own
signals (not agreement, which is ambiguous) within the evidence horizon, counted in
bank-wide events: the change is explained by that teacher. Every
detection still counts in :meth:`DetectorBank.summary` and in the teacher's evidence.

>>> bank = DetectorBank(BankConfig(kl_window=20, kl_reference=40))
>>> alarms = []
>>> for i in range(600):
...     long = i >= 300
...     alarms += bank.update("gpt", {"length": 400 if long else 100 + i % 7,
...                                  "refusal": 0, "answer": "yes" if i % 3 else "no"})
>>> [(a.teacher, a.signal, a.detector, a.index) for a in alarms]
[('gpt', 'length', 'adwin', 319)]
>>> state = bank.drift_state("gpt")
>>> state.in_drift, state.signals
(True, ['length'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from detectors.exceptions import UnknownSignal
from detectors.state import KINDS, STATE_FORMAT, STATE_VERSION, check_header, detector_from_state
from stream.signals import SIGNALS

BINARY = ("refusal", "format", "agreement")
WARNING_EVIDENCE = 0.25  # a detector in warning: a hint, not a detection
_BINARY_KINDS = ("hddm_a", "adwin")


@dataclass(frozen=True)
class DriftRecord:
    """One teacher-level drift alarm."""

    teacher: str
    signal: str
    detector: str
    index: int  # the teacher's event index (0-based) when the detector fired
    statistic: float
    threshold: float
    time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("statistic", "threshold"):
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                d[k] = None
        return d


@dataclass(frozen=True, slots=True)
class TeacherDriftState:
    """A teacher's drift state: ``evidence`` in [0, 1] says how strongly its detectors
    currently point at drift (1 while a detection is within the horizon, then decaying);
    ``signals`` lists the signals that fired within the horizon. Completed teacher groups
    carry it per teacher (``distill.groups.DriftState``)."""

    evidence: float
    in_drift: bool
    signals: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BankConfig:
    """Detector settings shared by every teacher (validated at construction)."""

    false_alarms_per_10k: float = 0.5  # per teacher, all signals; KL tests get a share
    hist_bins: int = 64
    answer_bins: int = 32
    adwin_delta: float = 0.05  # River's 0.002 misses 0.3-0.5 sd length shifts (README)
    adwin_clock: int = 32
    binary_detector: str = "hddm_a"  # beat ADWIN on the real chains (README)
    binary_confidence: float = 0.0002  # 0.001 gives ~1 FA/10k on rates near 0.5
    kl_window: int = 100
    kl_reference: int = 200
    kl_test_every: int = 10
    length_log: bool = True  # ADWIN sees log(1 + words): lengths are heavy-tailed
    refractory: int = 200  # teacher events after an alarm in which detections only corroborate
    reset_on_alarm: bool = True
    evidence_horizon: int = 300  # teacher events a detection keeps evidence at 1
    signals: tuple[str, ...] = SIGNALS

    def __post_init__(self) -> None:
        errors = []
        if not 0 < self.false_alarms_per_10k <= 100:
            errors.append(
                f"false_alarms_per_10k must be in (0, 100], got {self.false_alarms_per_10k}")
        if self.hist_bins < 4 or self.answer_bins < 2:
            errors.append("hist_bins must be >= 4 and answer_bins >= 2")
        if not 0 < self.adwin_delta < 1 or not 0 < self.binary_confidence < 0.5:
            errors.append("adwin_delta must be in (0, 1) and binary_confidence in (0, 0.5)")
        if self.binary_detector not in _BINARY_KINDS:
            errors.append(f"binary_detector must be one of {_BINARY_KINDS}, "
                          f"got {self.binary_detector!r}")
        if not 10 <= self.kl_window <= self.kl_reference:
            errors.append("need 10 <= kl_window <= kl_reference")
        if not 1 <= self.kl_test_every <= self.kl_window:
            errors.append("kl_test_every must be in [1, kl_window]")
        if self.refractory < 0 or self.evidence_horizon < 1 or self.adwin_clock < 1:
            errors.append("refractory >= 0, evidence_horizon >= 1, adwin_clock >= 1")
        unknown = set(self.signals) - set(SIGNALS)
        if unknown:
            errors.append(f"unknown signals {sorted(unknown)}; known: {SIGNALS}")
        if errors:
            raise ValueError("; ".join(errors))

    def kind_of(self, signal: str) -> str:
        if signal == "length":
            return "adwin"
        return self.binary_detector if signal in BINARY else "kl_window"

    def make(self, signal: str) -> Any:
        """A fresh detector for one signal."""
        kind = self.kind_of(signal)
        if kind == "adwin":
            return KINDS["adwin"](delta=self.adwin_delta, clock=self.adwin_clock)
        if kind == "hddm_a":
            return KINDS["hddm_a"](drift_confidence=self.binary_confidence,
                                   warning_confidence=min(0.5, 5 * self.binary_confidence),
                                   two_sided_test=True)
        return KINDS["kl_window"](  # an equal share of the teacher's budget per signal
            bins=self.hist_bins if signal == "vocab" else self.answer_bins,
            window_size=self.kl_window, reference_size=self.kl_reference,
            test_every=self.kl_test_every,
            false_alarms_per_10k=self.false_alarms_per_10k / len(self.signals))


class _Key:
    """One (teacher, signal) detector with its counters."""

    __slots__ = ("detections", "detector", "kind", "last_detection", "n")

    def __init__(self, kind: str, detector: Any) -> None:
        self.kind, self.detector = kind, detector
        self.n = 0
        self.detections = 0
        self.last_detection: int | None = None


class _Teacher:
    __slots__ = ("keys", "last_alarm", "last_alarm_clock", "n")

    def __init__(self, config: BankConfig) -> None:
        self.n = 0
        self.last_alarm: int | None = None
        # bank-wide event count at the last alarm on a signal of the teacher's own
        self.last_alarm_clock: int | None = None
        self.keys = {s: _Key(config.kind_of(s), config.make(s)) for s in config.signals}


class DetectorBank:
    """Detectors keyed by (teacher, signal); see the module docstring for alarm rules."""

    def __init__(self, config: BankConfig | None = None) -> None:
        self.config = config or BankConfig()
        self._teachers: dict[str, _Teacher] = {}
        self._clock = 0  # events over all teachers

    def teachers(self) -> list[str]:
        return list(self._teachers)

    def update(self, teacher: str, signals: Mapping[str, Any],
               time: float | None = None) -> list[DriftRecord]:
        """Feed one event's signals (None values are skipped); return new alarms."""
        entry = self._teachers.get(teacher)
        if entry is None:
            entry = self._teachers[teacher] = _Teacher(self.config)
        if len(signals) != 1 or "agreement" not in signals:
            entry.n += 1
            self._clock += 1
        index = entry.n - 1
        alarms: list[DriftRecord] = []
        keys = entry.keys
        for name, value in signals.items():
            if value is None:
                continue
            key = keys.get(name)
            if key is None:
                raise UnknownSignal(f"no detector for signal {name!r}; known: {list(keys)}")
            if name == "length" and self.config.length_log:
                value = math.log1p(value)
            det = key.detector
            det.update(value)
            key.n += 1
            if det._drift_detected:  # the property costs a call per update; all ours
                key.detections += 1
                key.last_detection = index
                if self._alarms(entry, index, name):
                    entry.last_alarm = index
                    if name != "agreement":
                        entry.last_alarm_clock = self._clock
                    alarms.append(DriftRecord(teacher, name, key.kind, index,
                                              float(det.statistic), float(det.threshold), time))
        if alarms and self.config.reset_on_alarm:
            fired = {a.signal for a in alarms}
            for name, key in keys.items():
                if name not in fired:
                    key.detector = self.config.make(name)
        return alarms

    def _alarms(self, entry: _Teacher, index: int, signal: str) -> bool:
        """Whether a detection becomes an alarm (see the module docstring)."""
        if entry.last_alarm is not None and index - entry.last_alarm <= self.config.refractory:
            return False
        if signal != "agreement":
            return True
        since = self._clock - self.config.evidence_horizon * len(self._teachers)
        return not any(t is not entry and t.last_alarm_clock is not None
                       and t.last_alarm_clock >= since for t in self._teachers.values())

    def drift_state(self, teacher: str) -> TeacherDriftState:
        """Evidence for drift-weighted negatives: 1 within ``evidence_horizon`` events of a
        detection, then halving every horizon; a detector in warning keeps it >= 0.25."""
        entry = self._teachers.get(teacher)
        if entry is None:
            return TeacherDriftState(0.0, False, [])
        horizon = self.config.evidence_horizon
        evidence, recent = 0.0, []
        for name, key in entry.keys.items():
            if getattr(key.detector, "_warning_detected", False):  # no property call
                evidence = max(evidence, WARNING_EVIDENCE)
            if key.last_detection is None:
                continue
            age = entry.n - 1 - key.last_detection
            if age <= horizon:
                recent.append(name)
                evidence = 1.0
            else:
                evidence = max(evidence, 0.5 ** ((age - horizon) / horizon))
        return TeacherDriftState(evidence, bool(recent), recent)

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """teacher -> signal -> n, estimate, window_size, statistic, threshold, detections."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for teacher, entry in self._teachers.items():
            out[teacher] = {}
            for name, key in entry.keys.items():
                det = key.detector
                size = det.current_size if key.kind == "kl_window" else det.window_size
                out[teacher][name] = {
                    "n": key.n, "estimate": float(det.estimate), "window_size": int(size),
                    "statistic": float(det.statistic), "threshold": _finite(det.threshold),
                    "last_detection": key.last_detection, "detections": key.detections,
                    "detector": key.kind,
                }
        return out

    def to_state(self) -> dict[str, Any]:
        """Versioned JSON-able document of the whole bank."""
        teachers = {}
        for teacher, entry in self._teachers.items():
            teachers[teacher] = {
                "n": entry.n, "last_alarm": entry.last_alarm,
                "last_alarm_clock": entry.last_alarm_clock,
                "keys": {name: {"kind": k.kind, "n": k.n, "detections": k.detections,
                                "last_detection": k.last_detection,
                                "detector": k.detector.to_state()}
                         for name, k in entry.keys.items()},
            }
        cfg = asdict(self.config)
        cfg["signals"] = list(cfg["signals"])
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "config": cfg,
                "clock": self._clock, "teachers": teachers}

    @classmethod
    def from_state(cls, doc: dict[str, Any]) -> DetectorBank:
        """Restore a bank written by :meth:`to_state`; future detections are identical."""
        check_header(doc)
        cfg = dict(doc["config"])
        cfg["signals"] = tuple(cfg["signals"])
        bank = cls(BankConfig(**cfg))
        bank._clock = doc["clock"]
        for teacher, t in doc["teachers"].items():
            entry = _Teacher.__new__(_Teacher)
            entry.n, entry.last_alarm = t["n"], t["last_alarm"]
            entry.last_alarm_clock = t["last_alarm_clock"]
            entry.keys = {}
            for name, k in t["keys"].items():
                key = _Key(k["kind"], detector_from_state(k["kind"], k["detector"]))
                key.n, key.detections = k["n"], k["detections"]
                key.last_detection = k["last_detection"]
                entry.keys[name] = key
            bank._teachers[teacher] = entry
        return bank


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
