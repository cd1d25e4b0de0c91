"""The monitor pipeline in one process, without I/O: validated events in, alerts and groups out.

It is the two stages ``distill serve`` runs over Kafka, wired directly: the
:class:`~distill.monitor.ingest.IngestStage` (dedup, signals, join, consensus, groups) hands
its observations and its low watermark to the :class:`~distill.monitor.detect.DetectStage`
(the detector bank, fed in canonical order). ``distill replay``, the benchmarks and the
experiments use it, and because the detect stage orders by event time, they raise the same
alerts as ``serve`` on any number of partitions. Everything it holds round-trips through
:meth:`to_state`, so a restored pipeline continues exactly where the checkpoint left it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from detectors.bank import BankConfig, DetectorBank, DriftRecord
from distill.config import ServeConfig
from distill.consensus import ReliabilityConfig, ReliabilityConsensus
from distill.groups import TeacherGroup
from distill.monitor.detect import DetectStage
from distill.monitor.ingest import IngestOutput, IngestStage, format_timestamp_float
from distill.monitor.observations import FLUSH_SEQ, Watermark
from stream.dedup import DedupWindow
from stream.events import Invalid, TeacherEvent
from stream.join import SampleJoiner
from stream.roster import TeacherRoster
from stream.signals import PEER_SIGNALS

STATE_VERSION = 2  # 2: the state of an ingest and/or a detect stage
BATCH = 256  # events a finite run hands the embedder at once (as serve does per poll)
_SERVE_DEFAULTS = ServeConfig.model_fields  # one source for the bounds' defaults

PEER_ALERT_SIGNALS = frozenset({"peer", *PEER_SIGNALS})  # alarms on a teacher's peers' view

__all__ = ["MonitorPipeline", "PartitionedPipeline", "PipelineConfig", "StepOutput",
           "format_timestamp_float"]


@dataclass
class StepOutput:
    """What one step produced: alerts first, then closed groups."""

    alerts: list[DriftRecord] = field(default_factory=list)
    groups: list[TeacherGroup] = field(default_factory=list)
    duplicate: bool = False
    rejected: Invalid | None = None  # the event was refused (dead-letter it with this)

    def extend(self, other: StepOutput) -> None:
        self.alerts.extend(other.alerts)
        self.groups.extend(other.groups)


@dataclass(frozen=True)
class PipelineConfig:
    """The knobs of the monitor pipeline (mirrors the ``serve`` and ``detectors`` config).

    ``allowed_lateness_s`` (None: the group timeout) is how far behind the partition's
    watermark an event may still arrive and be detected in canonical order; the detect
    stage runs that much event time behind the stream."""

    bank: BankConfig = field(default_factory=BankConfig)
    expected_teachers: tuple[str, ...] = ()
    group_timeout_s: float = _SERVE_DEFAULTS["group_timeout_s"].default
    join_buffer_max: int = _SERVE_DEFAULTS["join_buffer_max"].default
    dedup_window: int = _SERVE_DEFAULTS["dedup_window"].default
    allowed_lateness_s: float | None = _SERVE_DEFAULTS["allowed_lateness_s"].default
    max_teachers: int = _SERVE_DEFAULTS["max_teachers"].default
    max_clock_skew_s: float = _SERVE_DEFAULTS["max_clock_skew_s"].default
    consensus: ReliabilityConfig = field(default_factory=ReliabilityConfig)
    # content embeddings (distill.monitor.embeddings.Embedder); used when bank.embedding_dim
    embedder: Any = field(default=None, compare=False)

    @property
    def lateness_s(self) -> float:
        return (self.group_timeout_s if self.allowed_lateness_s is None
                else self.allowed_lateness_s)

    def ingest(self, source: int = 0, drift_view: Any = None) -> IngestStage:
        return IngestStage(self, source, drift_view)

    def detect(self, sources: int = 1) -> DetectStage:
        return DetectStage(self.bank, sources)


class _Stages:
    def process(self, event: TeacherEvent, now: float | None = None) -> StepOutput:
        raise NotImplementedError

    def flush(self) -> StepOutput:
        raise NotImplementedError

    def prepare(self, events: list[TeacherEvent]) -> None:
        """Batch the per-event work that batches (the embeddings) before processing."""
        raise NotImplementedError

    def run(self, events: Iterable[TeacherEvent], flush: bool = True) -> StepOutput:
        """Process a finite stream; the offline path of replay and benchmarks."""
        out = StepOutput()
        it = iter(events)
        while batch := list(islice(it, BATCH)):
            self.prepare(batch)
            for event in batch:
                out.extend(self.process(event))
        if flush:
            out.extend(self.flush())
        return out


def _detect(detect: DetectStage, out: IngestOutput, mark: Watermark) -> StepOutput:
    alerts: list[DriftRecord] = []
    for obs in out.observations:
        alerts.extend(detect.add(obs))
    detect.watermark(mark)
    alerts.extend(detect.release())
    return StepOutput(alerts=alerts, groups=out.groups)


def _forget(ingests: list[IngestStage], out: StepOutput) -> StepOutput:
    """A teacher that alarmed on its own signals is relearnt by every ingest stage's
    consensus (a peer-relative alarm is the others' view of it, not its own change)."""
    for alert in out.alerts:
        if alert.signal not in PEER_ALERT_SIGNALS:
            for ingest in ingests:
                ingest.consensus.forget(alert.teacher)
    return out


class MonitorPipeline(_Stages):
    """Both stages in one process (module docstring); one input partition, source 0."""

    def __init__(self, config: PipelineConfig | None = None) -> None:
        self.config = config or PipelineConfig()
        self.detect = self.config.detect()
        self.ingest = self.config.ingest(drift_view=lambda t: self.detect.bank.drift_state(t))
        self.offset = 0  # events processed: the position of the next one

    # the parts callers and tests look at
    @property
    def bank(self) -> DetectorBank:
        return self.detect.bank

    @property
    def joiner(self) -> SampleJoiner:
        return self.ingest.joiner

    @property
    def dedup(self) -> DedupWindow:
        return self.ingest.dedup

    @property
    def events(self) -> Any:
        return self.ingest.events

    @property
    def last_alert(self) -> dict[str, dict[str, Any]]:
        return self.detect.last_alert

    @property
    def consensus(self) -> ReliabilityConsensus:
        return self.ingest.consensus

    @property
    def roster(self) -> TeacherRoster:
        return self.ingest.roster

    @property
    def rejected(self) -> Any:
        return self.ingest.rejected

    def prepare(self, events: list[TeacherEvent]) -> None:
        self.ingest.prepare(events)

    def process(self, event: TeacherEvent, now: float | None = None) -> StepOutput:
        """One event; ``now`` (wall-clock epoch seconds) enables the future-timestamp check
        (serve passes it; replay of a recorded stream does not)."""
        out = self.ingest.process(event, self.offset, now)
        if out.rejected is not None:
            return StepOutput(rejected=out.rejected)
        self.offset += 1
        if out.duplicate:
            return StepOutput(duplicate=True)
        return _forget([self.ingest], _detect(self.detect, out,
                                                  Watermark(0, 1, self.ingest.low_watermark())))

    def flush(self) -> StepOutput:
        """Close every open group and release every observation (a finite stream's end)."""
        out = self.ingest.flush(self.offset - 1, FLUSH_SEQ)
        return _forget([self.ingest], _detect(self.detect, out,
                                                  Watermark(0, 1, float("inf"))))

    def counters(self) -> dict[str, Any]:
        return self.ingest.counters()

    def to_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "offset": self.offset,
                "ingest": self.ingest.to_state(), "detect": self.detect.to_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        check_version(state)
        self.offset = state["offset"]
        self.ingest.load_state(state["ingest"])
        self.detect.load_state(state["detect"])

class PartitionedPipeline(_Stages):
    """The stages as ``serve`` runs them on ``partitions`` input partitions, in one process:
    events are routed by a hash of ``sample_id`` (as producers key them), each partition has
    its own ingest stage, and one detect stage waits for all their watermarks. What
    ``distill bench detect --partitions`` runs; its alerts are those of
    :class:`MonitorPipeline`."""

    def __init__(self, config: PipelineConfig | None = None, partitions: int = 1) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.config = config or PipelineConfig()
        self.detect = self.config.detect(partitions)
        self.ingests = [self.config.ingest(p, self.detect.bank.drift_state)
                        for p in range(partitions)]
        self.offsets = [0] * partitions

    def _partition(self, event: TeacherEvent) -> int:
        return zlib.crc32(event.sample_id.encode()) % len(self.ingests)

    def prepare(self, events: list[TeacherEvent]) -> None:
        for p, ingest in enumerate(self.ingests):
            ingest.prepare([e for e in events if self._partition(e) == p])

    def process(self, event: TeacherEvent, now: float | None = None) -> StepOutput:
        p = self._partition(event)
        ingest = self.ingests[p]
        out = ingest.process(event, self.offsets[p], now)
        if out.rejected is not None:
            return StepOutput(rejected=out.rejected)
        self.offsets[p] += 1
        if out.duplicate:
            return StepOutput(duplicate=True)
        mark = Watermark(p, len(self.ingests), ingest.low_watermark())
        return _forget(self.ingests, _detect(self.detect, out, mark))

    def flush(self) -> StepOutput:
        out = StepOutput()
        for p, ingest in enumerate(self.ingests):
            closed = ingest.flush(self.offsets[p] - 1, FLUSH_SEQ)
            mark = Watermark(p, len(self.ingests), math.inf)
            out.extend(_forget(self.ingests, _detect(self.detect, closed, mark)))
        return out


def check_version(state: dict[str, Any]) -> None:
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"pipeline state version {state.get('version')!r}, "
                         f"expected {STATE_VERSION}")
