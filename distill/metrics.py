"""The Prometheus metrics contract of the monitor and the trainer.

Everything is registered on an injected :class:`~prometheus_client.CollectorRegistry`
(never the process-global one), so tests and several services in one process stay apart.
Names follow Prometheus conventions: the ``distill_`` prefix, base units, ``_total`` on
counters, and only bounded labels (teacher, signal, detector, reason, trigger, status,
partition, metric). Sample ids and text never become labels.

Label children whose values are known at start are created at 0 right away, so that
``increase()`` sees the first event and dashboards show a flat line instead of "no data".

>>> from prometheus_client import CollectorRegistry
>>> reg = CollectorRegistry()
>>> m = MonitorMetrics(reg)
>>> m.dead_lettered.labels(reason="not_json").inc()
>>> reg.get_sample_value("distill_messages_dead_lettered_total", {"reason": "not_json"})
1.0
>>> reg.get_sample_value("distill_messages_dead_lettered_total", {"reason": "too_large"})
0.0
>>> m.attach_bank(lambda: {"gpt": {"length": {"n": 10, "estimate": 41.5, "statistic": 0.2,
...     "threshold": 0.9, "window_size": 10, "detector": "kl_window", "detections": 0,
...     "last_detection": None, "last_detection_time": None}}})
>>> reg.get_sample_value("distill_drift_threshold",
...                      {"teacher": "gpt", "signal": "length", "detector": "kl_window"})
0.9
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from distill.trainer.triggers import TRIGGERS
from stream.events import ADMISSION_REASONS, REJECTION_REASONS
from stream.signals import SIGNALS as SIGNALS  # re-exported: the `signal` label values

log = logging.getLogger(__name__)
_Family = GaugeMetricFamily | CounterMetricFamily  # the families that take add_metric

RETRAIN_STATUSES = ("promoted", "kept", "failed", "interrupted")
"""How a round ended; the ``status`` label of ``distill_retrain_runs_total``."""

PROCESSING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                      0.1, 0.25, 0.5, 1.0)
RETRAIN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)

BankSummary = Mapping[str, Mapping[str, Mapping[str, Any]]]
"""teacher -> signal -> {"n", "estimate", "window_size", "statistic", "threshold",
"last_detection", "last_detection_time", "detections", "detector"}; any value may be None."""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("drift-distill")
    except Exception:  # not installed (running from a source tree)
        return "unknown"


def _register_build_info(registry: CollectorRegistry) -> None:
    """``distill_build_info{version}`` = 1, once per registry (serve may host the trainer)."""
    version = _version()
    if registry.get_sample_value("distill_build_info", {"version": version}) is not None:
        return
    Gauge("distill_build_info", "Always 1; the version label says what runs.", ["version"],
          registry=registry).labels(version=version).set(1)


class MonitorMetrics:
    """Metrics of ``distill serve``. ``messages_consumed`` counts every polled message,
    valid or not; ``dead_lettered`` is the rejected subset, by reason.

    Detection counters must exist at 0 before the first detection (``increase()`` cannot
    see a series' first sample): each scrape creates them for every (teacher, signal,
    detector) the attached bank knows; :meth:`teacher_seen` does it eagerly.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.messages_consumed = Counter(
            "distill_messages_consumed", "Messages polled from the input topic (valid or not).",
            registry=r)
        self.dead_lettered = Counter(
            "distill_messages_dead_lettered", "Messages routed to the dead-letter topic.",
            ["reason"], registry=r)
        self.duplicates = Counter(
            "distill_duplicate_events", "Events dropped because their event_id was seen.",
            registry=r)
        self.processing_seconds = Histogram(
            "distill_processing_seconds", "Wall time to process one message.",
            buckets=PROCESSING_BUCKETS, registry=r)
        self.drift_detections = Counter(
            "distill_drift_detections", "Drift detections per teacher, signal and detector.",
            ["teacher", "signal", "detector"], registry=r)
        self.groups_completed = Counter(
            "distill_groups_completed", "Teacher groups completed (all expected teachers).",
            registry=r)
        self.groups_timed_out = Counter(
            "distill_groups_timed_out", "Teacher groups closed by the join timeout.", registry=r)
        self.join_overflow = Counter(
            "distill_join_buffer_overflow", "Open samples evicted: join buffer full.",
            registry=r)
        self.dedup_overflow = Counter(
            "distill_dedup_window_overflow", "Event ids forgotten: dedup window full.",
            registry=r)
        self.checkpoint_timestamp = Gauge(
            "distill_checkpoint_timestamp_seconds", "Unix time of the last durable checkpoint.",
            registry=r)
        self.checkpoints = Counter(
            "distill_checkpoints", "Checkpoints written (state durable, then offsets committed).",
            registry=r)
        self.broker_up = Gauge(
            "distill_broker_up", "1 when the last broker call succeeded, 0 while retrying.",
            registry=r)
        self.offset_out_of_range = Counter(
            "distill_offset_out_of_range", "Checkpointed offsets found outside their "
            "partition's log on assignment (the broker lost data).", registry=r)
        self.consumer_lag = Gauge(
            "distill_consumer_lag_messages", "End offset minus position, per assigned partition.",
            ["partition"], registry=r)
        self.last_message_timestamp = Gauge(
            "distill_last_message_timestamp_seconds", "Unix time the last message was processed.",
            registry=r)
        self.events_by_teacher = Counter(
            "distill_teacher_events", "Valid, non-duplicate events per teacher.", ["teacher"],
            registry=r)
        _register_build_info(r)
        for reason in (*REJECTION_REASONS, *ADMISSION_REASONS):
            self.dead_lettered.labels(reason=reason)
        self._teachers: set[str] = set()
        self._detected_at: dict[tuple[str, str], float] = {}

    def teacher_seen(self, teacher: str, detectors: Mapping[str, str] | Iterable[tuple[str, str]]
                     ) -> None:
        """Create ``teacher``'s children at 0: its event counter and one detection counter per
        (signal, detector) pair given. Cheap and idempotent; call it for every event if simpler.
        """
        pairs = detectors.items() if isinstance(detectors, Mapping) else detectors
        if teacher in self._teachers:
            return
        self._teachers.add(teacher)
        self.events_by_teacher.labels(teacher=teacher)
        for signal, detector in pairs:
            self.drift_detections.labels(teacher=teacher, signal=signal, detector=detector)

    def record_detection(self, teacher: str, signal: str, detector: str,
                         when: float | None = None) -> None:
        """Count one detection and remember its wall time for
        ``distill_last_drift_timestamp_seconds`` (unless the bank summary gives one)."""
        self.drift_detections.labels(teacher=teacher, signal=signal, detector=detector).inc()
        self._detected_at[(teacher, signal)] = time.time() if when is None else when

    def attach_bank(self, summary_fn: Callable[[], BankSummary],
                    evidence_fn: Callable[[], Mapping[str, float]] | None = None) -> None:
        """Expose the detector bank's live state, read on each scrape.

        ``summary_fn`` is called from the HTTP server's thread: it must return a snapshot
        (or take the bank's lock). ``evidence_fn`` optionally maps teacher -> drift evidence.
        """
        self.registry.register(BankCollector(
            summary_fn, evidence_fn, on_key=self._bank_key, detected_at=self._detected_at,
            process_detections=self._detection_counts))

    def _detection_counts(self) -> dict[tuple[str, str], float]:
        """Detections counted by this process, per (teacher, signal)."""
        counts: dict[tuple[str, str], float] = {}
        for family in self.drift_detections.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["teacher"], sample.labels["signal"])
                    counts[key] = counts.get(key, 0.0) + sample.value
        return counts

    def _bank_key(self, teacher: str, signal: str, detector: str) -> None:
        """Every (teacher, signal, detector) the bank knows gets its detection counter at 0,
        normally long before its first detection (detectors need a warm-up)."""
        self.drift_detections.labels(teacher=teacher, signal=signal, detector=detector)
        self.events_by_teacher.labels(teacher=teacher)


class BankCollector(Collector):
    """Turns the bank summary into gauges on each scrape. Sample output::

        distill_drift_statistic{teacher="gpt",signal="length",detector="kl_window"} 0.2
        distill_drift_threshold{teacher="gpt",signal="length",detector="kl_window"} 0.9
        distill_detector_window_size{teacher="gpt",signal="length",detector="kl_window"} 10.0
        distill_detector_observations_total{teacher="gpt",signal="length",detector="kl_window"} 10.0
        distill_signal_estimate{teacher="gpt",signal="length"} 41.5
        distill_last_drift_timestamp_seconds{teacher="gpt",signal="length"} 0.0
    """

    def __init__(self, summary_fn: Callable[[], BankSummary],
                 evidence_fn: Callable[[], Mapping[str, float]] | None = None,
                 on_key: Callable[[str, str, str], None] | None = None,
                 detected_at: Mapping[tuple[str, str], float] | None = None,
                 process_detections: Callable[[], Mapping[tuple[str, str], float]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._summary_fn = summary_fn
        self._evidence_fn = evidence_fn
        self._on_key = on_key
        self._detected_at = detected_at if detected_at is not None else {}
        self._process_detections = process_detections
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, float]] = {}  # -> (detections, when)

    def describe(self) -> Iterator[Metric]:
        yield from self._families().values()
        if self._evidence_fn is not None:
            yield _evidence_family()

    def collect(self) -> Iterator[Metric]:
        try:
            summary = self._summary_fn()
        except Exception:  # a scrape must not take the service down; log and expose nothing
            log.exception("detector bank summary failed during a scrape")
            return
        families = self._families()
        counts = self._process_detections() if self._process_detections else None
        for teacher, signals in summary.items():
            for signal, s in signals.items():
                if self._on_key is not None:
                    self._on_key(teacher, signal, str(s.get("detector") or "unknown"))
                _add(families, teacher, signal, s, self._last_drift(teacher, signal, s, counts))
        yield from families.values()
        if self._evidence_fn is not None:
            yield from self._collect_evidence()

    def _last_drift(self, teacher: str, signal: str, s: Mapping[str, Any],
                    counts: Mapping[tuple[str, str], float] | None) -> float:
        """``last_detection_time`` when the bank gives one, else the time passed to
        :meth:`MonitorMetrics.record_detection`, else the wall time of the scrape that first
        saw the detections rise: this process's counter when known (a detection before the
        first scrape counts as "now"), else the bank's count (whose restored part has no
        time: 0 until the next detection)."""
        given = _timestamp(s.get("last_detection_time"))
        if given is None:
            given = self._detected_at.get((teacher, signal))
        if given is not None:
            return given
        key = (teacher, signal)
        if counts is not None:
            count = counts.get(key, 0.0)
        elif isinstance(s.get("detections"), int):
            count = float(s["detections"])
        else:
            return 0.0
        previous = self._seen.get(key)
        if previous is None:
            seen_now = counts is not None and count > 0
            self._seen[key] = (count, self._clock() if seen_now else 0.0)
        elif count > previous[0]:
            self._seen[key] = (count, self._clock())
        return self._seen[key][1]

    def _collect_evidence(self) -> Iterator[Metric]:
        assert self._evidence_fn is not None
        try:
            evidence = self._evidence_fn()
        except Exception:
            log.exception("drift evidence failed during a scrape")
            return
        fam = _evidence_family()
        for teacher, value in evidence.items():
            if _number(value) is not None:
                fam.add_metric([teacher], float(value))
        yield fam

    @staticmethod
    def _families() -> dict[str, _Family]:
        tsd = ["teacher", "signal", "detector"]
        ts = ["teacher", "signal"]
        return {
            "statistic": GaugeMetricFamily(
                "distill_drift_statistic", "Current test statistic of the detector.", labels=tsd),
            "threshold": GaugeMetricFamily(
                "distill_drift_threshold", "Statistic value at which the detector fires.",
                labels=tsd),
            "window_size": GaugeMetricFamily(
                "distill_detector_window_size", "Observations in the detector's current window.",
                labels=tsd),
            "n": CounterMetricFamily(
                "distill_detector_observations", "Observations the detector has seen.",
                labels=tsd),
            "estimate": GaugeMetricFamily(
                "distill_signal_estimate", "Current estimate of the signal (e.g. mean length, "
                "agreement ratio).", labels=ts),
            "last_detection_time": GaugeMetricFamily(
                "distill_last_drift_timestamp_seconds",
                "Unix time of the last detection on this signal, 0 if none.", labels=ts),
        }


def _evidence_family() -> GaugeMetricFamily:
    return GaugeMetricFamily("distill_teacher_drift_evidence",
                             "Current drift evidence per teacher (weights its negatives).",
                             labels=["teacher"])


def _add(families: dict[str, _Family], teacher: str, signal: str, s: Mapping[str, Any],
         last_drift: float) -> None:
    detector = str(s.get("detector") or "unknown")
    for key in ("statistic", "threshold", "window_size", "n"):
        value = _number(s.get(key))
        if value is not None:
            families[key].add_metric([teacher, signal, detector], value)
    estimate = _number(s.get("estimate"))
    if estimate is not None:
        families["estimate"].add_metric([teacher, signal], estimate)
    families["last_detection_time"].add_metric([teacher, signal], last_drift)


def _number(value: Any) -> float | None:
    """A finite float, or None for None / NaN / non-numbers (those samples are skipped)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _timestamp(value: Any) -> float | None:
    """Unix seconds from a number, a datetime or an RFC 3339 string."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return _number(value)


class TrainerMetrics:
    """Metrics of ``distill train --follow`` and ``distill retrain``.

    >>> from prometheus_client import CollectorRegistry
    >>> reg = CollectorRegistry()
    >>> t = TrainerMetrics(reg)
    >>> reg.get_sample_value("distill_retrain_runs_total", {"trigger": "alert", "status": "failed"})
    0.0
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.retrain_runs = Counter(
            "distill_retrain_runs", "Retrain rounds by trigger and outcome.", ["trigger", "status"],
            registry=r)
        self.retrain_duration = Histogram(
            "distill_retrain_duration_seconds", "Wall time of one retrain round.",
            buckets=RETRAIN_BUCKETS, registry=r)
        self.retrain_last_success = Gauge(
            "distill_retrain_last_success_timestamp_seconds",
            "Unix time the last round finished without error (promoted or kept).", registry=r)
        self.train_loss = Gauge("distill_train_loss", "Mean APO loss of the last round.",
                                registry=r)
        self.reward_margin = Gauge(
            "distill_train_reward_margin",
            "Mean reward of the positive minus mean reward of the negatives, last round.",
            registry=r)
        self.eval_score = Gauge("distill_student_eval_score",
                                "Evaluation score of the serving student, by metric.", ["metric"],
                                registry=r)
        self.student_version = Gauge("distill_student_version",
                                     "Registry version of the serving (promoted) student.",
                                     registry=r)
        self.preference_groups = Counter(
            "distill_preference_groups_built", "Preference groups (1 positive, N negatives) built.",
            registry=r)
        self.buffer_groups = Gauge("distill_trainer_buffer_groups",
                                   "Teacher groups held in the replay buffer.", registry=r)
        self.synthesis_fallbacks = Counter(
            "distill_synthesis_fallbacks",
            "Consensus syntheses that fell back (e.g. to the majority teacher's trajectory).",
            registry=r)
        _register_build_info(r)
        for trigger in TRIGGERS:
            for status in RETRAIN_STATUSES:
                self.retrain_runs.labels(trigger=trigger, status=status)


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry can expose (with ``_total``, ``_bucket`` ...), for
    checks that dashboards and rules only use metrics that exist.

    >>> from prometheus_client import CollectorRegistry
    >>> reg = CollectorRegistry()
    >>> _ = TrainerMetrics(reg)
    >>> "distill_retrain_duration_seconds_bucket" in metric_names(reg)
    True
    """
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names
