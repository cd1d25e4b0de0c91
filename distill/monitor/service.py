"""`distill serve`: the long-lived monitor loop, the two stages of the pipeline over Kafka.

One consumer group reads the input topic (the **ingest** stage: decode, dead letters,
dedup, signals, join, consensus, groups) and the internal observations topic (the
**detect** stage: one owner per teacher, its detectors fed in canonical event-time order,
alerts and each teacher's drift state). ``serve.role`` picks which topics an instance
subscribes to: ``all`` (the default: both, one process), ``ingest`` or ``detect``. Each
ingest partition sends its observations keyed by teacher and, after every batch, its low
watermark to every observations partition. State is checkpointed per partition, of either
topic, with the offsets it covers (see :mod:`stream.checkpoint` for the order). Signal
handlers only set the stop flag; the loop finishes the records in hand, forces a final
checkpoint and leaves through one ExitStack. A broker that stops answering is retried
with backoff and reported on ``/healthz`` and ``distill_broker_up``.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from detectors.bank import DriftRecord, TeacherDriftState
from detectors.exceptions import DetectorError
from distill.config import Config, drift_state_topic, observations_topic
from distill.exceptions import (
    CheckpointUnreadable,
    OffsetOutOfRange,
    ServeSetupError,
    ServeStalled,
)
from distill.groups import fit_record
from distill.http import start_http_server
from distill.kafka import kafka_settings
from distill.metrics import MonitorMetrics
from distill.monitor import observations as obs_codec
from distill.monitor.driftstate import DriftStateReader
from distill.monitor.ingest import NO_DRIFT, IngestOutput
from distill.monitor.observations import FLUSH_SEQ, Watermark
from distill.monitor.partition import PartitionState
from distill.monitor.pipeline import PipelineConfig, format_timestamp_float
from distill.monitor.status import merge_summaries
from distill.retry import Backoff
from distill.statedir import StateDir, jsonl_line
from stream.broker import EmbeddedBroker
from stream.checkpoint import OFFSET_RESETS, commit_checkpoint, resume_offset
from stream.deadletter import DeadLetterSink
from stream.events import Invalid, TeacherEvent, decode_event, internal_error
from stream.exceptions import FatalClientError, StreamError
from stream.images import confine_all
from stream.kafka import (
    MAX_RECORD_BYTES,
    KafkaSettings,
    Record,
    Sink,
    Source,
    ensure_topics,
    open_sink,
    open_source,
)
from stream.probe import BrokerProbe

log = logging.getLogger("distill.serve")
RECENT_ALERTS = 10_000  # alerts a run keeps in memory (all of them go to Kafka and the log)
FINAL_CHECKPOINT_S = 20.0  # retrying the last checkpoint; below Kubernetes' 30 s grace period
ROLES = {"ingest": ("input",), "detect": ("observations",), "all": ("input", "observations")}


def pipeline_config(cfg: Config, embedder: Any = None) -> PipelineConfig:
    """The pipeline of ``cfg``; with the embedder of ``cfg.detectors`` loaded by the caller
    (:meth:`distill.config.DetectorsConfig.embedder`: it may distil a model once)."""
    d = cfg.detectors
    return PipelineConfig(
        bank=d.bank(embedder.dim if embedder is not None else 0),
        embedder=embedder,
        expected_teachers=tuple(cfg.serve.expected_teachers),
        group_timeout_s=cfg.serve.group_timeout_s,
        max_teachers=cfg.serve.max_teachers,
        allowed_lateness_s=cfg.serve.allowed_lateness_s,
        max_clock_skew_s=cfg.serve.max_clock_skew_s,
        join_buffer_max=cfg.serve.join_buffer_max,
        dedup_window=cfg.serve.dedup_window,
        consensus=cfg.consensus.reliability(),
    )


def partition_count(settings: KafkaSettings, topic: str, timeout_s: float = 30.0) -> int:
    """How many partitions ``topic`` has (the ingest stage's watermarks say so)."""
    from kafka import KafkaConsumer

    client = KafkaConsumer(**settings.common(), enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            parts = client.partitions_for_topic(topic)
            if parts or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        client.close()
    if not parts:
        raise StreamError(f"topic {topic} has no partitions (or no broker answered)")
    return len(parts)


@dataclass
class RunLimits:
    """Stop conditions that let tests and the demo run the real loop to completion.

    ``finish`` (with ``idle_exit_s``) declares the stream finite: once it has been idle,
    the ingest partitions close their open groups and release the detect stage to the end,
    and the service exits when that, too, has been idle as long, so the result equals
    ``distill replay`` of the same stream. Without it the detect stage keeps the last
    allowed-lateness span of observations buffered (in its checkpoint) for a later run."""

    max_records: int | None = None
    idle_exit_s: float | None = None  # stop after this long with nothing to read
    finish: bool = False


@dataclass
class RunSummary:
    records: int = 0  # input records (the ingest stage's)
    observations: int = 0  # records of the observations topic (the detect stage's)
    dead_lettered: int = 0
    alerts: deque[dict[str, Any]] = field(  # the latest ones: a daemon runs for weeks
        default_factory=lambda: deque(maxlen=RECENT_ALERTS))
    alerts_total: int = 0
    checkpoints: int = 0
    first_record_at: float | None = None  # time.perf_counter() of the first record handled
    last_commit_at: float | None = None  # ... and of the last successful checkpoint
    last_record_at: float | None = None  # ... and when the last batch was handled


class MonitorService:
    def __init__(self, cfg: Config, registry: CollectorRegistry | None = None,
                 limits: RunLimits | None = None, on_alert: Any = None) -> None:
        self.cfg = cfg
        self.limits = limits or RunLimits()
        self.registry = registry or CollectorRegistry()
        self.metrics = MonitorMetrics(self.registry)
        self._lock = threading.RLock()
        self.metrics.attach_bank(self._bank_summary, self._evidence)
        self.on_alert = on_alert
        self.state_dir = Path(cfg.serve.state_dir)
        self.layout = StateDir(self.state_dir)
        self.pconfig = pipeline_config(cfg, cfg.detectors.embedder(self.state_dir))
        bank = self.pconfig.bank
        self._detector_pairs = [(s, bank.kind_of(s)) for s in bank.signals]
        self._teacher_events: dict[str, Any] = {}  # teacher -> its events counter child
        self.obs_topic = observations_topic(cfg.kafka)
        self.state_topic = drift_state_topic(cfg.kafka)
        self.topics = [cfg.kafka.input_topic if name == "input" else self.obs_topic
                       for name in ROLES[cfg.serve.role]]
        # a detect-only instance joins its own group: members of one group subscribe to the
        # same topics (all-role instances to both)
        self.group_id = (f"{cfg.kafka.group_id}-detect" if cfg.serve.role == "detect"
                         else cfg.kafka.group_id)
        self.input_partitions = 0  # known once the input topic exists
        self.parts: dict[tuple[str, int], PartitionState] = {}
        self.drift_reader: DriftStateReader | None = None  # an ingest-only instance's
        self._outbox: dict[int, list[Any]] = {}  # observations partition -> this batch's
        self._decoded: dict[tuple[str, int, int], Any] = {}  # this poll's, with embeddings on
        self.summary = RunSummary()
        self.running = True
        self.finished = False  # the stream was declared finite and drained (idle_exit_s)
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._checkpoint_failing_since: float | None = None
        self._unassigned_since: float | None = time.monotonic()
        self.offset_resets: deque[dict[str, Any]] = deque(maxlen=20)  # for /healthz
        self._offsets_to_check: set[tuple[str, int]] = set()
        self._fatal: Exception | None = None
        self._timeline_at = 0  # records at the last timeline snapshot
        self.probe: BrokerProbe | None = None
        self.source: Source | None = None
        self.sink: Sink | None = None
        self.http_port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        self.running = False

    def run(self) -> RunSummary:
        k = self.cfg.kafka
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)  # the broker logs into it
        except OSError as exc:
            raise ServeSetupError(f"state dir {self.state_dir}: {exc.strerror}") from exc
        with ExitStack() as stack:
            server = self._start_http()  # first: a bad address fails before anything else
            stack.callback(server.shutdown)
            servers = k.bootstrap_servers
            if not servers:
                broker = stack.enter_context(EmbeddedBroker(log_path=self.layout.broker_log))
                servers = broker.bootstrap_servers
                log.info("started embedded broker at %s", servers)
            settings = kafka_settings(self.cfg, servers)
            ensure_topics(settings, {k.input_topic: k.partitions, k.dead_letter_topic: 1,
                                     k.alerts_topic: 1, k.groups_topic: k.partitions,
                                     self.obs_topic: k.observation_partitions,
                                     self.state_topic: k.observation_partitions},
                          configs={self.state_topic: {"cleanup.policy": "compact"}})
            if self.cfg.kafka.input_topic in self.topics:
                self.input_partitions = partition_count(settings, k.input_topic)
            self.obs_partitions = partition_count(settings, self.obs_topic)
            # one in flight: observations of one input partition must arrive in the order
            # sent (the detect stage drops what is not past the last position it accepted)
            self.sink = open_sink(settings, linger_ms=20, batch_size=262_144,
                                  max_in_flight_requests_per_connection=1)
            stack.callback(self.sink.close)
            self.dlq = DeadLetterSink(self.sink, k.dead_letter_topic)
            if self.cfg.serve.role == "ingest":  # the detectors' states, for the groups
                self.drift_reader = DriftStateReader(settings, self.state_topic)
                stack.callback(self.drift_reader.close)
            self.probe = BrokerProbe(settings, self.topics[0]).start()
            stack.callback(self.probe.stop)
            self.source = open_source(settings, self.topics, self.group_id,
                                      on_assign=self._on_assign, on_revoke=self._on_revoke)
            stack.callback(self.source.close)
            self._alerts_log = stack.enter_context(open(self.layout.alerts, "ab"))
            self._timeline = stack.enter_context(open(self.layout.timeline, "ab"))
            self._install_signal_handlers(stack)
            log.info("serving %s (role %s) as group %s; metrics on http://%s:%d/metrics",
                     ", ".join(self.topics), self.cfg.serve.role, self.group_id, server.host,
                     server.port)
            self._loop()
            if self._fatal is not None:
                raise self._fatal
            self._final_checkpoint()
            if self._checkpoint_failing_since is not None:
                raise ServeStalled("the final checkpoint was not committed (outputs not "
                                   "acknowledged); a restart resumes from the last one")
            self._write_timeline()
        return self.summary

    def _start_http(self) -> Any:
        address = self.cfg.serve.metrics_address
        try:
            server = start_http_server(address, self.registry, self.health)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ServeSetupError(f"cannot serve /metrics on {address}: {reason}") from exc
        self.http_port = server.port
        return server

    def _final_checkpoint(self) -> None:
        """Checkpoint before leaving, retried for up to :data:`FINAL_CHECKPOINT_S` while
        outputs are not acknowledged (a broker that stalls for a moment)."""
        deadline = time.monotonic() + FINAL_CHECKPOINT_S
        self._checkpoint(force=True)
        while self._checkpoint_failing_since is not None and time.monotonic() < deadline:
            time.sleep(0.5)
            self._checkpoint(force=True)

    def _install_signal_handlers(self, stack: ExitStack) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous = signal.signal(sig, self.stop)
            except ValueError:  # not the main thread (tests run the loop in a thread)
                continue
            stack.callback(signal.signal, sig, previous)

    def _loop(self) -> None:
        assert self.source is not None
        idle_since: float | None = None  # idle time counts once the first record arrived
        backoff = Backoff()
        while self.running:
            try:
                records = self.source.poll(timeout_ms=200)
                backoff.succeeded()
            except FatalClientError as exc:
                log.error("the Kafka client failed fatally (%s); stopping", exc)
                self._fatal = exc
                break
            except (KafkaError, StreamError) as exc:
                delay = backoff.failed()
                log.warning("poll failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                continue
            if self._offsets_to_check:
                with self._lock:
                    records = self._check_offsets(records)
                if self._fatal is not None:
                    break
            with self._lock:  # the metrics thread reads the banks between batches
                touched: set[tuple[str, int]] = set()
                self._prepare(records)
                for record in records:
                    self._handle(record)
                    touched.add((record.topic, record.partition))
                self._after_batch(touched)
            if records:
                self.summary.last_record_at = time.perf_counter()
                self.metrics.last_message_timestamp.set(time.time())
            self._update_live_metrics()
            if self.summary.records - self._timeline_at >= self.cfg.serve.timeline_every:
                self._write_timeline()
            if records:
                idle_since = time.monotonic()
            self._checkpoint()
            self._check_stalls()
            if self._limit_reached(idle_since):
                if not self.limits.finish or self.finished or not self._finish():
                    break
                idle_since = time.monotonic()

    def _check_stalls(self) -> None:
        """Stop with :class:`ServeStalled` after ``stall_exit_s`` without partitions or
        with outputs unacknowledged; a restart (new consumer and producer) recovers."""
        now = time.monotonic()
        self._unassigned_since = None if self.parts else (self._unassigned_since or now)
        limit = self.cfg.serve.stall_exit_s
        if not limit:  # 0: never
            return
        for since, what in ((self._unassigned_since, "no partitions assigned"),
                            (self._checkpoint_failing_since, "outputs not acknowledged")):
            if since is not None and now - since > limit:
                log.error("%s for %.0f s (serve.stall_exit_s); exiting for a restart",
                          what, now - since)
                self._fatal = ServeStalled(f"{what} for {now - since:.0f} s")
                self.running = False

    def _limit_reached(self, idle_since: float | None) -> bool:
        lim = self.limits
        if lim.max_records is not None and self.summary.records >= lim.max_records:
            return True
        return (lim.idle_exit_s is not None and idle_since is not None
                and time.monotonic() - idle_since > lim.idle_exit_s)

    def _finish(self) -> bool:
        """The stream is finite (``idle_exit_s``): close the open groups and release the
        detect stage to the end; True while there is something left to consume."""
        self.finished = True
        with self._lock:
            ingest = [p for p in self.parts.values() if p.archive is not None]
            for part in ingest:
                last = -1 if part.next_offset is None else part.next_offset - 1
                self._emit_ingest(part, part.ingest.flush(last, FLUSH_SEQ))
                self._send_observations()
                self._send_watermark(part, math.inf)
                part.dirty = part.next_offset is not None
            self._checkpoint(force=True)
        return bool(ingest) and self.cfg.serve.role == "all"

    def _prepare(self, records: list[Record]) -> None:
        """With embeddings on, encode the poll's outputs in one call per input partition
        (several times cheaper per output than one call each); the decoded events are kept
        for :meth:`_ingest`. Best effort: a failure here leaves each record to be encoded
        (and dead-lettered, if it must be) on its own."""
        self._decoded.clear()
        if self.pconfig.embedder is None:
            return
        try:
            batches: dict[tuple[str, int], list[TeacherEvent]] = {}
            for record in records:
                key = (record.topic, record.partition)
                part = self.parts.get(key)
                if part is None or part.archive is None:
                    continue
                decoded = decode_event(record.value, self.cfg.serve.max_message_bytes)
                self._decoded[(*key, record.offset)] = decoded
                if isinstance(decoded, TeacherEvent):
                    batches.setdefault(key, []).append(decoded)
            for key, events in batches.items():
                self.parts[key].ingest.prepare(events)
        except Exception:
            log.exception("batched embedding of a poll failed; encoding record by record")
            self._decoded.clear()

    # -- per record ----------------------------------------------------------------------

    def _handle(self, record: Record) -> None:
        part = self.parts.get((record.topic, record.partition))
        if part is None:  # a record of a partition revoked while the batch was in hand
            return
        started = time.perf_counter()
        if self.summary.first_record_at is None:
            self.summary.first_record_at = started
        try:
            if part.archive is not None:
                self.metrics.messages_consumed.inc()  # the input topic's (as the metric says)
                self.summary.records += 1  # counted whatever becomes of it
                self._ingest(part, record)
            else:
                self.summary.observations += 1
                self._observe(part, record)
        except (KafkaError, StreamError):
            raise  # the producer or broker, not this record: stop for the supervisor
        except Exception as exc:  # no single record may stop the daemon
            log.exception("record %s[%d]@%d failed", record.topic, record.partition,
                          record.offset)
            self._dead_letter(record, internal_error(exc))
        part.next_offset = record.offset + 1
        part.dirty = True
        self._since_checkpoint += 1
        self.metrics.processing_seconds.observe(time.perf_counter() - started)

    def _ingest(self, part: PartitionState, record: Record) -> None:
        decoded = self._decoded.pop((record.topic, record.partition, record.offset), None)
        if decoded is None:
            decoded = decode_event(record.value, self.cfg.serve.max_message_bytes)
        if isinstance(decoded, TeacherEvent) and decoded.images:
            outside = confine_all(decoded.images, self.cfg.serve.image_roots)
            decoded = decoded if outside is None else outside
        if isinstance(decoded, TeacherEvent):
            stage = part.ingest
            joined, deduped = stage.joiner.overflow, stage.dedup.overflow
            out = stage.process(decoded, record.offset, now=time.time())
            if out.rejected is not None:
                self._dead_letter(record, out.rejected)
                return
            if out.duplicate:
                self.metrics.duplicates.inc()
            else:
                self._count_event(decoded.teacher)
                self._emit_ingest(part, out)
            self._count_overflow(stage.joiner.overflow - joined, stage.dedup.overflow - deduped)
        else:
            self._dead_letter(record, decoded)

    def _observe(self, part: PartitionState, record: Record) -> None:
        try:
            message = obs_codec.decode(record.value)
        except ValueError as exc:
            self._dead_letter(record, Invalid("bad_observation", str(exc)))
            return
        if isinstance(message, Watermark):
            part.detect.watermark(message)
            return
        for obs in message:
            self._emit_alerts(part.detect.add(obs))

    def _dead_letter(self, record: Record, invalid: Invalid) -> None:
        self.dlq.send(record, invalid)
        self.metrics.dead_lettered.labels(reason=invalid.reason).inc()
        self.summary.dead_lettered += 1

    def _count_overflow(self, join: int, dedup: int) -> None:
        """The pipeline counts evictions in its state; mirror this process's share."""
        if join:
            self.metrics.join_overflow.inc(join)
        if dedup:
            self.metrics.dedup_overflow.inc(dedup)

    def _count_event(self, teacher: str) -> None:
        counter = self._teacher_events.get(teacher)
        if counter is None:  # labels() takes a lock and builds a key: once per teacher
            counter = self._teacher_events[teacher] = \
                self.metrics.events_by_teacher.labels(teacher=teacher)
        counter.inc()

    def _emit_ingest(self, part: PartitionState, out: IngestOutput) -> None:
        assert self.sink is not None and part.archive is not None
        k = self.cfg.kafka
        for o in out.observations:
            p = obs_codec.partition_of(o.teacher, self.obs_partitions)
            self._outbox.setdefault(p, []).append(o)
        for group in out.groups:
            payload = group.to_json()
            self.sink.send(k.groups_topic, fit_record(group, payload, MAX_RECORD_BYTES),
                           key=group.sample_id.encode())
            part.archive.append(payload)  # the whole group, however large
            counter = (self.metrics.groups_completed if group.status == "complete"
                       else self.metrics.groups_timed_out)
            counter.inc()

    def _send_observations(self) -> None:
        """The batch's observations, a few messages per observations partition (in order:
        the detect stage drops what is not past the last position it accepted)."""
        assert self.sink is not None
        step = obs_codec.BATCH
        for p, batch in self._outbox.items():
            for i in range(0, len(batch), step):
                self.sink.send(self.obs_topic, obs_codec.encode_batch(batch[i:i + step]),
                               partition=p)
        self._outbox.clear()

    def _send_watermark(self, part: PartitionState, at: float) -> None:
        assert self.sink is not None
        if at == -math.inf:
            return
        raw = obs_codec.encode(Watermark(part.partition, self.input_partitions, at))
        for p in range(self.obs_partitions):
            self.sink.send(self.obs_topic, raw, partition=p)

    def _after_batch(self, touched: set[tuple[str, int]]) -> None:
        """Ingest partitions publish their watermarks; detect partitions release what all
        input partitions have passed, then publish their teachers' drift states."""
        if self.drift_reader is not None:
            self.drift_reader.poll()
        self._send_observations()
        for key in touched:
            part = self.parts.get(key)
            if part is not None and part.archive is not None:
                self._send_watermark(part, part.ingest.low_watermark())
        for key in touched:
            part = self.parts.get(key)
            if part is not None and part.archive is None:
                applied = part.detect.counters.observations
                self._emit_alerts(part.detect.release())
                if part.detect.counters.observations != applied:
                    self._publish_drift_states(part)

    def _emit_alerts(self, alerts: list[DriftRecord]) -> None:
        assert self.sink is not None
        k = self.cfg.kafka
        for alert in alerts:
            doc = alert.to_dict()
            line = orjson.dumps(doc)
            self.sink.send(k.alerts_topic, line, key=alert.teacher.encode())
            self._alerts_log.write(jsonl_line(doc))
            self.metrics.record_detection(alert.teacher, alert.signal, alert.detector)
            log.warning("drift: teacher=%s signal=%s detector=%s at the teacher's event %s "
                        "(statistic %.4g > threshold %.4g)", alert.teacher, alert.signal,
                        alert.detector, alert.index, alert.statistic or 0.0,
                        alert.threshold or 0.0, extra={"alert": doc})
            self.summary.alerts.append(doc)
            self.summary.alerts_total += 1
            if self.on_alert:
                self.on_alert(doc)

    def _publish_drift_states(self, part: PartitionState) -> None:
        """Each teacher of this detect partition, keyed by teacher on the compacted
        drift-state topic: what the trainer, other ingest instances and dashboards read."""
        assert self.sink is not None
        bank = part.detect.bank
        for teacher in bank.teachers():
            # detection counters exist at 0 from a teacher's first observation, long before
            # its first detection, so Prometheus' increase() sees that detection
            self.metrics.teacher_seen(teacher, self._detector_pairs)
            state = bank.drift_state(teacher)
            doc = {"teacher": teacher, "evidence": state.evidence, "in_drift": state.in_drift,
                   "signals": state.signals, "events": part.detect.events.get(teacher, 0),
                   "last_alert": part.detect.last_alert.get(teacher)}
            self.sink.send(self.state_topic, orjson.dumps(doc), key=teacher.encode())

    def drift_view(self, teacher: str) -> TeacherDriftState:
        """A teacher's drift state for the groups: from its detect stage when this process
        owns it, else as last read from the drift-state topic."""
        for part in self.parts.values():
            if part.archive is None and teacher in part.detect.bank.teachers():
                return part.detect.bank.drift_state(teacher)
        if self.drift_reader is None:
            return NO_DRIFT
        return self.drift_reader.states.get(teacher, NO_DRIFT)

    # -- partitions and checkpoints ------------------------------------------------------

    def _on_assign(self, partitions: list[tuple[str, int]]) -> None:
        with self._lock:
            self._assign(partitions)

    def _assign(self, partitions: list[tuple[str, int]]) -> None:
        assert self.source is not None
        for topic, p in partitions:
            if (topic, p) in self.parts:
                continue
            try:
                if topic == self.obs_topic:
                    part = PartitionState.restore_detect(self.state_dir, topic, p, self.pconfig)
                else:
                    part = PartitionState.restore_ingest(
                        self.state_dir, topic, p, self.pconfig,
                        self.cfg.serve.archive_segment_events, self.drift_view)
            except (DetectorError, ValueError, KeyError, TypeError, OSError) as exc:
                path = self.layout.checkpoint(topic, p)
                self._fatal = CheckpointUnreadable(
                    f"{path}: {exc}. Restore a good copy, or move it away to start this "
                    f"partition afresh from the committed offset (its counts restart at 0).")
                self.running = False
                return
            self.parts[(topic, p)] = part
            if part.next_offset is not None:
                self.source.seek(topic, p, part.next_offset)
                self._offsets_to_check.add((topic, p))  # after poll: clients cannot query
                # the broker from inside their rebalance callback
            log.info("assigned %s[%d] from offset %s", topic, p, part.next_offset)

    def _check_offsets(self, records: list[Record]) -> list[Record]:
        """Check the offsets of partitions restored from a checkpoint against their logs,
        before their first records are handled; a moved partition's fetched records are
        dropped (they are fetched again from where it now resumes)."""
        # the input topic's first: its lost records are the ones an operator must hear of
        for key in sorted(self._offsets_to_check, key=lambda k: (k[0] == self.obs_topic, k)):
            part = self.parts.get(key)
            if part is None or part.next_offset is None:
                continue
            before = part.next_offset
            self._check_offset(part)
            if self._fatal is not None:
                return []
            if part.next_offset != before:
                assert self.source is not None
                self.source.seek(part.topic, part.partition, part.next_offset)
                records = [r for r in records if (r.topic, r.partition) != key]
        self._offsets_to_check.clear()
        return records

    def _check_offset(self, part: PartitionState) -> None:
        """A checkpointed offset outside the partition's log means the broker lost data:
        logged, counted, kept for /healthz and `distill status`, handled by
        ``serve.offset_out_of_range``."""
        assert self.source is not None and part.next_offset is not None
        topic, p, offset = part.topic, part.partition, part.next_offset
        try:
            low, high = self.source.log_bounds(topic, p)
        except (KafkaError, StreamError) as exc:
            log.warning("could not check the checkpointed offset of %s[%d] (%s)", topic, p, exc)
            return
        policy = self.cfg.serve.offset_out_of_range
        resume = resume_offset(offset, low, high, policy)
        if resume == offset:
            return
        reset = {"partition": f"{topic}[{p}]", "checkpointed": offset, "log_start": low,
                 "log_end": high, "policy": policy, "resumed_at": resume, "time": time.time()}
        log.error("the checkpointed offset %d of %s[%d] is outside its log [%d, %d]: the "
                  "broker lost data; serve.offset_out_of_range=%s", offset, topic, p, low, high,
                  policy, extra={"offset_reset": reset})
        self.metrics.offset_out_of_range.inc()
        self.offset_resets.append(reset)
        with open(self.state_dir / OFFSET_RESETS, "ab") as fh:
            fh.write(orjson.dumps(reset) + b"\n")
        if resume is None:
            self._fatal = OffsetOutOfRange(
                f"{topic}[{p}]: checkpointed offset {offset} is outside the log [{low}, "
                f"{high}] (the broker lost data); set serve.offset_out_of_range to earliest "
                f"or latest to resume")
            self.running = False
            return
        part.next_offset, part.dirty = resume, True

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> None:
        with self._lock:
            self._revoke(partitions)

    def _revoke(self, partitions: list[tuple[str, int]]) -> None:
        """Drop the partitions' in-memory state; the new owner resumes from their last
        checkpoint. No checkpoint here: kafka-python runs this callback on its IO thread,
        where flushing or committing would block, and the durable checkpoint plus a replay
        of the records after it rebuild exactly this state anyway (outputs at least once)."""
        for key in partitions:
            part = self.parts.pop(tuple(key), None)  # type: ignore[arg-type]
            if part:
                part.close()
            log.info("revoked %s[%d]", *key)

    def _checkpoint(self, force: bool = False) -> None:
        due = (self._since_checkpoint >= self.cfg.serve.checkpoint_every or
               time.monotonic() - self._last_checkpoint >= self.cfg.serve.checkpoint_interval_s)
        if not (force or due):
            return
        dirty = [p for p in self.parts.values() if p.dirty and p.next_offset is not None]
        self._last_checkpoint = time.monotonic()
        if not dirty and self._checkpoint_failing_since is None:
            return  # (while failing, the flush alone is retried: outputs must be acked)
        try:
            commit_checkpoint(self.state_dir, [p.snapshot() for p in dirty], self.sink,
                              self.source, time.time())
        except (KafkaError, StreamError) as exc:
            self._checkpoint_failing_since = self._checkpoint_failing_since or time.monotonic()
            log.warning("checkpoint not committed (%s); will retry", exc)
            return
        self._checkpoint_failing_since = None
        for p in dirty:
            p.dirty = False
        self._since_checkpoint = 0
        self.summary.checkpoints += 1
        self.summary.last_commit_at = time.perf_counter()
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_timestamp.set(time.time())

    # -- observability -------------------------------------------------------------------

    def _write_timeline(self) -> None:
        """Append the banks' summary to ``timeline.jsonl`` every ``timeline_every`` records
        (and at the end), in the format
        `distill replay` writes, so `distill report --state-dir` draws a serve state dir too.
        Diagnostic only: after a crash a stretch may appear twice."""
        marks = [p.detect.frontier for p in self.parts.values() if p.archive is None]
        at = max((m for m in marks if math.isfinite(m)), default=float("-inf"))
        doc = {"events": self.summary.records, "time": format_timestamp_float(at),
               "alerts": self.summary.alerts_total, "summary": self._bank_summary()}
        self._timeline.write(jsonl_line(doc))
        self._timeline.flush()
        self._alerts_log.flush()
        self._timeline_at = self.summary.records

    def _detect_parts(self) -> list[PartitionState]:
        return [p for p in self.parts.values() if p.archive is None]

    def _bank_summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        with self._lock:  # one detect partition per teacher: each series has one writer
            return merge_summaries([p.detect.bank.summary() for p in self._detect_parts()])

    def _evidence(self) -> dict[str, float]:
        with self._lock:
            return {teacher: p.detect.bank.drift_state(teacher).evidence
                    for p in self._detect_parts() for teacher in p.detect.bank.teachers()}

    def _update_live_metrics(self) -> None:
        if self.probe is None:
            return
        self.metrics.broker_up.set(1 if self.probe.healthy else 0)
        for (topic, p), part in list(self.parts.items()):
            end = self.probe.end_offsets.get(p) if topic == self.probe.topic else None
            if end is not None and part.next_offset is not None:
                self.metrics.consumer_lag.labels(partition=str(p)).set(
                    max(0, end - part.next_offset))

    def health(self) -> tuple[bool, dict[str, Any]]:
        probe = self.probe.status() if self.probe else {"broker_reachable": False}
        now = time.monotonic()
        failing, unassigned = self._checkpoint_failing_since, self._unassigned_since
        unassigned_for = None if unassigned is None else round(now - unassigned, 3)
        body = {
            **probe,
            "role": self.cfg.serve.role,
            "partitions": sorted(f"{t}[{p}]" for t, p in self.parts),
            "records": self.summary.records,
            "checkpoint_failing_for_s": None if failing is None else round(now - failing, 3),
            "unassigned_for_s": unassigned_for,
            "offset_resets": list(self.offset_resets),
        }
        # a rebalance leaves a member without partitions for about a session timeout
        rebalance_s = 2 * self.cfg.kafka.session_timeout_ms / 1000
        assigned = unassigned_for is None or unassigned_for < rebalance_s
        return bool(probe["broker_reachable"]) and failing is None and assigned, body
