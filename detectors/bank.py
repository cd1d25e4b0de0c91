"""The detector bank: per-teacher detectors, teacher-level alarms, JSON state.

A teacher's entry appears the first time it is seen. Each update carries some of the
signals of :data:`stream.signals.SIGNALS`; a call that carries one of the teacher's own
signals (:data:`stream.signals.OWN_SIGNALS`) counts as one new event of that teacher, and
detections are indexed by the teacher's event count. The peer-relative signals
(agreement, relative length, distance to the peers' embeddings) arrive in their own call
when the sample's group closes.

Two kinds of bank (``BankConfig.test``):

- ``"mmd"`` (default): two joint tests per teacher, each a :class:`~detectors.mmd.MMDWindow`
  (kernel two-sample test, permutation p-value, level from the false-alarm budget): key
  ``own`` over the vector of the event's own signals, key ``peer`` over the vector of its
  peer-relative signals. Half the teacher's budget each. After an alarm both re-anchor
  and test again after ``2 * mmd_min_size`` events, so a second change soon after the
  first is still caught (``refractory`` is 0).
- ``"univariate"``: one detector per (teacher, signal) as before: ADWIN on length,
  HDDM_A on binary signals, the KL-window test on categorical and histogram signals.

Answer-based signals switch themselves off for a teacher with no extractable answers
(fewer than ``min_answer_rate`` of its events): :meth:`DetectorBank.live_signals`.

Several signals usually react to the same change, and the benchmark (Cerqueira et al.)
counts every alarm after the first as false. So a detection becomes an alarm (a
:class:`DriftRecord` returned by :meth:`DetectorBank.update`) only when the teacher has had
no alarm in the last ``refractory`` events; afterwards the teacher's other detectors are
re-anchored on the new regime (``reset_on_alarm``). Peer signals are relational: when one
teacher changes, the leave-one-out majority of every other teacher moves with it. So a
peer detection is not an alarm while another teacher has alarmed within the evidence
horizon, counted in bank-wide events: the change is explained by that teacher. In the
univariate bank only alarms on a teacher's own signals count (agreement alone is
ambiguous); in the joint bank the first teacher whose peer test alarms takes the change
(its shift relative to the others is the largest), as does any alarm of its own test. Every
detection still counts in :meth:`DetectorBank.summary` and in the teacher's evidence.
With ``peer_reanchor`` (joint bank, off by default) an alarm instead re-anchors every other
teacher's peer test: their references contain the changed teacher, so they restart on
data that already holds its change, and a later peer detection is not explained away
(it cannot be the earlier change). A teacher whose own change follows another's alarm
within the horizon is then still reported; measured on the demo and two real chains only.

>>> bank = DetectorBank(BankConfig(test="univariate", kl_window=20, kl_reference=40))
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
>>> bank = DetectorBank()  # the joint test: one alarm on the event-level vector
>>> alarms = []
>>> for i in range(600):
...     alarms += bank.update("gpt", {"length": 400 if i >= 300 else 100 + i % 7})
>>> [(a.signal, a.detector, a.index) for a in alarms]
[('own', 'mmd', 309)]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from detectors.exceptions import UnknownSignal
from detectors.state import KINDS, STATE_FORMAT, STATE_VERSION, check_header, detector_from_state
from stream.signals import OWN_SIGNALS, PEER_SIGNALS, SIGNALS, token_bin

BINARY = ("refusal", "format", "agreement")
UNIVARIATE = ("length", "answer", "refusal", "format", "vocab", "agreement")
TESTS = ("mmd", "univariate")
JOINT_KEYS = ("own", "peer")  # the mmd bank's detectors: own signals, peer-relative signals
ANSWER_SIGNALS = ("answer", "agreement")  # off for a teacher without extractable answers
_ANSWER_PARTS = re.compile(r"[;,\s]+")
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

    false_alarms_per_10k: float = 0.5  # per teacher, all signals; each test gets a share
    test: str = "mmd"  # joint permutation tests ("mmd") or one detector per signal
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
    mmd_window: int = 100
    mmd_reference: int = 200
    mmd_test_every: int = 10
    mmd_min_size: int = 40  # events each side before the first test after an anchor
    embedding_dim: int = 0  # length of the ``embedding`` signal; 0: no embeddings
    # mmd bank: an alarm re-anchors every other teacher's peer test (their references
    # contain the changed teacher), and a peer detection is then never explained away
    peer_reanchor: bool = False
    min_answer_rate: float = 0.05  # below it answer and agreement are not live
    refractory: int | None = None  # events after an alarm in which detections only
    # corroborate; None: 0 for "mmd" (its tests re-anchor), 200 for "univariate"
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
        if self.test not in TESTS:
            errors.append(f"test must be one of {TESTS}, got {self.test!r}")
        if not 10 <= self.mmd_min_size <= self.mmd_window <= self.mmd_reference:
            errors.append("need 10 <= mmd_min_size <= mmd_window <= mmd_reference")
        if not 1 <= self.mmd_test_every <= self.mmd_window:
            errors.append("mmd_test_every must be in [1, mmd_window]")
        if self.embedding_dim < 0 or not 0 <= self.min_answer_rate < 1:
            errors.append("embedding_dim must be >= 0 and min_answer_rate in [0, 1)")
        if (self.refractory or 0) < 0 or self.evidence_horizon < 1 or self.adwin_clock < 1:
            errors.append("refractory >= 0, evidence_horizon >= 1, adwin_clock >= 1")
        unknown = set(self.signals) - set(SIGNALS)
        if unknown:
            errors.append(f"unknown signals {sorted(unknown)}; known: {SIGNALS}")
        if errors:
            raise ValueError("; ".join(errors))

    @property
    def refractory_events(self) -> int:
        if self.refractory is not None:
            return self.refractory
        return 0 if self.test == "mmd" else 200

    def detector_keys(self) -> tuple[str, ...]:
        """The detectors of one teacher: the joint tests, or one per univariate signal."""
        if self.test == "mmd":
            return tuple(k for k in JOINT_KEYS if self.blocks(k))
        return tuple(s for s in self.signals if s in UNIVARIATE)

    def blocks(self, key: str) -> tuple[tuple[str, int], ...]:
        """(signal, dimension) of each block of a joint test's vector, in order."""
        dims = {"length": 1, "answer": 1 + self.answer_bins, "refusal": 1, "format": 1,
                "vocab": self.hist_bins, "embedding": self.embedding_dim,
                "agreement": 1, "rel_length": 1,
                "peer_distance": 1 if self.embedding_dim else 0}
        names = OWN_SIGNALS if key == "own" else PEER_SIGNALS
        return tuple((s, dims[s]) for s in names if s in self.signals and dims[s] > 0)

    def kind_of(self, signal: str) -> str:
        if signal in JOINT_KEYS:
            return "mmd"
        if signal == "length":
            return "adwin"
        return self.binary_detector if signal in BINARY else "kl_window"

    def make(self, signal: str) -> Any:
        """A fresh detector for one signal (or joint key)."""
        kind = self.kind_of(signal)
        if kind == "mmd":
            blocks = [d for _, d in self.blocks(signal)]
            share = self.false_alarms_per_10k / len(self.detector_keys())
            return KINDS["mmd"](dim=sum(blocks), blocks=blocks, window_size=self.mmd_window,
                                reference_size=self.mmd_reference, false_alarms_per_10k=share,
                                test_every=self.mmd_test_every, min_size=self.mmd_min_size)
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
            false_alarms_per_10k=self.false_alarms_per_10k / len(self.detector_keys()))


class _Key:
    """One (teacher, signal) detector with its counters."""

    __slots__ = ("detections", "detector", "kind", "last_detection", "n")

    def __init__(self, kind: str, detector: Any) -> None:
        self.kind, self.detector = kind, detector
        self.n = 0
        self.detections = 0
        self.last_detection: int | None = None


class _Teacher:
    __slots__ = ("answers", "keys", "last_alarm", "last_alarm_clock", "n")

    def __init__(self, config: BankConfig) -> None:
        self.n = 0
        self.answers = 0  # events with an extractable answer
        self.last_alarm: int | None = None
        # bank-wide event count at the last alarm on a signal of the teacher's own
        self.last_alarm_clock: int | None = None
        self.keys = {s: _Key(config.kind_of(s), config.make(s)) for s in config.detector_keys()}


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
        unknown = [name for name in signals if name not in SIGNALS]
        if unknown:
            raise UnknownSignal(f"no detector for signal {unknown[0]!r}; known: {SIGNALS}")
        own = any(name in signals for name in OWN_SIGNALS)
        if own:
            entry.n += 1
            self._clock += 1
            entry.answers += signals.get("answer") is not None
        if self.config.test == "mmd":
            alarms = self._update_joint(entry, teacher, signals, own, time)
        else:
            alarms = self._update_univariate(entry, teacher, signals, time)
        if alarms and self.config.reset_on_alarm:
            fired = {a.signal for a in alarms}
            for name, key in entry.keys.items():
                if name not in fired:
                    key.detector = self.config.make(name)
        if alarms and self.config.peer_reanchor and self.config.test == "mmd":
            for other in self._teachers.values():
                peer = other.keys.get("peer")
                if other is not entry and peer is not None:
                    peer.detector = self.config.make("peer")
        return alarms

    def _update_joint(self, entry: _Teacher, teacher: str, signals: Mapping[str, Any],
                      own: bool, time: float | None) -> list[DriftRecord]:
        name = "own" if own else "peer"
        key = entry.keys.get(name)
        if key is None or (not own and all(signals.get(s) is None for s in PEER_SIGNALS)):
            return []
        det = key.detector
        det.update(self._vector(entry, name, signals))
        key.n += 1
        return self._detected(entry, teacher, name, key, time)

    def _vector(self, entry: _Teacher, key: str, signals: Mapping[str, Any]) -> list[float]:
        return joint_vector(self.config, key, signals, self._answers_live(entry))

    def _update_univariate(self, entry: _Teacher, teacher: str, signals: Mapping[str, Any],
                           time: float | None) -> list[DriftRecord]:
        alarms: list[DriftRecord] = []
        keys = entry.keys
        for name, value in signals.items():
            key = keys.get(name)
            if value is None or key is None:  # a signal this bank does not watch
                continue
            if name == "length" and self.config.length_log:
                value = math.log1p(value)
            det = key.detector
            det.update(value)
            key.n += 1
            alarms.extend(self._detected(entry, teacher, name, key, time))
        return alarms

    def _detected(self, entry: _Teacher, teacher: str, name: str, key: _Key,
                  time: float | None) -> list[DriftRecord]:
        det = key.detector
        if not det._drift_detected:  # the property costs a call per update; all ours
            return []
        index = entry.n - 1
        key.detections += 1
        key.last_detection = index
        if not self._alarms(entry, index, name):
            return []
        entry.last_alarm = index
        if name not in PEER_SIGNALS:  # the joint peer test too: its alarm explains the
            entry.last_alarm_clock = self._clock  # peers' (first peer alarm wins)
        return [DriftRecord(teacher, name, key.kind, index, float(det.statistic),
                            float(det.threshold), time)]

    def _answers_live(self, entry: _Teacher) -> bool:
        return entry.answers >= self.config.min_answer_rate * entry.n

    def live_signals(self, teacher: str) -> list[str]:
        """The configured signals that currently carry information for a teacher: answer
        and agreement are off while fewer than ``min_answer_rate`` of its events have an
        extractable answer; embedding signals need an embedder (``embedding_dim``)."""
        entry = self._teachers.get(teacher)
        live = entry is not None and self._answers_live(entry)
        return [s for s in self.config.signals
                if (live or s not in ANSWER_SIGNALS)
                and (self.config.embedding_dim or s not in ("embedding", "peer_distance"))]

    def _alarms(self, entry: _Teacher, index: int, signal: str) -> bool:
        """Whether a detection becomes an alarm (see the module docstring)."""
        refractory = self.config.refractory_events
        if entry.last_alarm is not None and index - entry.last_alarm <= refractory:
            return False
        if signal not in ("agreement", "peer"):
            return True
        if signal == "peer" and self.config.peer_reanchor:
            return True  # every other alarm re-anchored this test: its windows hold no
            # change of another teacher that alarmed
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
        """teacher -> signal (or joint key) -> n, estimate, window_size, statistic,
        threshold, detections, and ``live``: the live signals the detector watches."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for teacher, entry in self._teachers.items():
            out[teacher] = {}
            live = self.live_signals(teacher)
            for name, key in entry.keys.items():
                det = key.detector
                size = det.current_size if key.kind in ("kl_window", "mmd") else det.window_size
                watched = ([s for s, _ in self.config.blocks(name)] if key.kind == "mmd"
                           else [name])
                out[teacher][name] = {
                    "n": key.n, "estimate": float(det.estimate), "window_size": int(size),
                    "statistic": float(det.statistic), "threshold": _finite(det.threshold),
                    "last_detection": key.last_detection, "detections": key.detections,
                    "detector": key.kind, "live": [s for s in watched if s in live],
                }
        return out

    def to_state(self) -> dict[str, Any]:
        """Versioned JSON-able document of the whole bank."""
        teachers = {}
        for teacher, entry in self._teachers.items():
            teachers[teacher] = {
                "n": entry.n, "answers": entry.answers, "last_alarm": entry.last_alarm,
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
            entry.answers = t["answers"]
            entry.last_alarm_clock = t["last_alarm_clock"]
            entry.keys = {}
            for name, k in t["keys"].items():
                key = _Key(k["kind"], detector_from_state(k["kind"], k["detector"]))
                key.n, key.detections = k["n"], k["detections"]
                key.last_detection = k["last_detection"]
                entry.keys[name] = key
            bank._teachers[teacher] = entry
        return bank


def joint_vector(config: BankConfig, key: str, signals: Mapping[str, Any],
                 answers_live: bool = True) -> list[float]:
    """A joint test's input (key ``own`` or ``peer``): each block of
    :meth:`BankConfig.blocks`, zeros where the signal is missing or not live."""
    out: list[float] = []
    for name, dim in config.blocks(key):
        value = signals.get(name)
        if name in ANSWER_SIGNALS and not answers_live:
            value = None
        if name == "length" and value is not None and config.length_log:
            value = math.log1p(value)
        if name == "answer":
            out.extend(_answer_block(value, dim))
        elif name == "agreement":
            out.append(0.5 if value is None else float(value))
        elif dim == 1:
            out.append(0.0 if value is None else float(value))
        elif value is None:
            out.extend([0.0] * dim)
        elif len(value) != dim:
            raise ValueError(f"signal {name!r} has {len(value)} values, expected {dim}")
        else:
            out.extend(value)
    return out


def _answer_block(answer: Any, dim: int) -> list[float]:
    """Has-answer flag, then the answer's parts (``a=b; c=d`` is a multi-label answer)
    hashed into ``dim - 1`` bins, summing to 1: a single answer is a one-hot."""
    block = [0.0] * dim
    if answer is None:
        return block
    block[0] = 1.0
    parts = _ANSWER_PARTS.split(str(answer).strip()) or [""]
    parts = [p for p in parts if p] or [""]
    for part in parts:
        block[1 + token_bin(part, dim - 1)] += 1.0 / len(parts)
    return block


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
