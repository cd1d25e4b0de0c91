"""The monitor pipeline without I/O: one validated event in, drift alerts and groups out.

``distill serve`` wraps it with Kafka and checkpoints, ``distill replay`` and the
benchmarks feed it from files. Everything it holds (dedup window, join buffer, detector
bank, counters) is deterministic and round-trips through :meth:`to_state`, so a restored
pipeline continues exactly where the checkpoint left it.

Per event: admit it (not later than the join allows, not further ahead of ``now`` than the
clock skew allows, a teacher the bounded roster tracks; else ``StepOutput.rejected`` says
why and nothing changes), dedupe by ``event_id``, compute the teacher's signals, update its
detectors, and join by ``sample_id``. When a sample's group closes (all expected teachers
answered, or the event-time timeout passed) the reliability-weighted consensus answer is taken
(:class:`~distill.consensus.ReliabilityConsensus`; a teacher's own-history alert makes it
relearn that teacher), each teacher's agreement with the others updates its ``agreement``
detector, and the group is emitted with every teacher's drift state at that moment.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from detectors.bank import BankConfig, DetectorBank, DriftRecord
from distill.config import ServeConfig
from distill.consensus import LabelVotes, ReliabilityConfig, ReliabilityConsensus
from distill.groups import TeacherAnswer, TeacherGroup, image_refs
from stream.dedup import DedupWindow
from stream.events import Invalid, TeacherEvent, format_timestamp
from stream.join import JoinedSample, SampleJoiner
from stream.ratelog import RateLimitedLog
from stream.roster import TeacherRoster
from stream.signals import PEER_SIGNALS, event_signals, leave_one_out_agreement, peer_signals

STATE_VERSION = 1
_SERVE_DEFAULTS = ServeConfig.model_fields  # one source for the bounds' defaults
log = logging.getLogger(__name__)


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
    """The knobs of the monitor pipeline (mirrors the ``serve`` and ``detectors`` config)."""

    bank: BankConfig = field(default_factory=BankConfig)
    expected_teachers: tuple[str, ...] = ()
    group_timeout_s: float = _SERVE_DEFAULTS["group_timeout_s"].default
    join_buffer_max: int = _SERVE_DEFAULTS["join_buffer_max"].default
    dedup_window: int = _SERVE_DEFAULTS["dedup_window"].default
    max_teachers: int = _SERVE_DEFAULTS["max_teachers"].default
    allowed_lateness_s: float | None = _SERVE_DEFAULTS["allowed_lateness_s"].default
    max_clock_skew_s: float = _SERVE_DEFAULTS["max_clock_skew_s"].default
    consensus: ReliabilityConfig = field(default_factory=ReliabilityConfig)


class MonitorPipeline:
    def __init__(self, config: PipelineConfig | None = None) -> None:
        self.config = config or PipelineConfig()
        self.bank = DetectorBank(self.config.bank)
        self.joiner = SampleJoiner(self.config.expected_teachers or None,
                                   self.config.group_timeout_s, self.config.join_buffer_max,
                                   self.config.allowed_lateness_s)
        self.roster = TeacherRoster(self.config.expected_teachers, self.config.max_teachers)
        self.dedup = DedupWindow(self.config.dedup_window)
        self.consensus = ReliabilityConsensus(self.config.consensus)
        self.events: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._strays = RateLimitedLog(log)
        self.duplicates = 0
        self.groups_completed = 0
        self.groups_timed_out = 0
        self.last_alert: dict[str, dict[str, Any]] = {}

    def process(self, event: TeacherEvent, now: float | None = None) -> StepOutput:
        """One event; ``now`` (wall-clock epoch seconds) enables the future-timestamp check
        (serve passes it; replay of a recorded stream does not)."""
        at = event.produced_at.timestamp()
        rejected = self._admit(event, at, now)
        if rejected is not None:
            self.rejected[rejected.reason] += 1
            return StepOutput(rejected=rejected)
        if self.dedup.seen_before(event.event_id):
            self.duplicates += 1
            return StepOutput(duplicate=True)
        self.events[event.teacher] += 1
        signals = event_signals(event, self.config.bank.hist_bins)
        out = StepOutput(alerts=self._note(self.bank.update(event.teacher, signals, at)))
        if out.alerts:  # the teacher changed on its own history: relearn its reliability
            self.consensus.forget(event.teacher)
        payload = _answer_payload(event, signals.get("answer"))
        payload["length"] = signals["length"]
        strays = self.joiner.strays
        for sample in self.joiner.add(event.sample_id, event.teacher, payload, at):
            out.extend(self._close(sample, at))
        if self.joiner.strays > strays:
            self._strays.note("stray teacher", "%r answered but is not in the expected set %s; "
                              "its answers join no group", event.teacher[:100],
                              sorted(self.joiner.expected_teachers())[:20])
        return out

    def _admit(self, event: TeacherEvent, at: float, now: float | None) -> Invalid | None:
        if now is not None and at > now + self.config.max_clock_skew_s:
            return Invalid("future_timestamp", f"{format_timestamp(event.produced_at)} is "
                           f"more than {self.config.max_clock_skew_s:g} s ahead of the clock")
        if self.joiner.is_late(at):
            return Invalid("late", f"{format_timestamp(event.produced_at)} is before the "
                           f"watermark {format_timestamp_float(self.joiner.watermark)} minus "
                           f"{self.joiner.allowed_lateness_s:g} s")
        if not self.roster.admit(event.teacher):
            return Invalid("teacher_overflow", f"{len(self.roster.names)} teachers tracked "
                           f"already (serve.max_teachers)")
        return None

    def flush(self) -> StepOutput:
        """Close every open group (the end of a finite stream)."""
        out = StepOutput()
        for sample in self.joiner.flush():
            out.extend(self._close(sample, self.joiner.watermark))
        return out

    def _close(self, sample: JoinedSample, at: float) -> StepOutput:
        if sample.status == "complete":
            self.groups_completed += 1
        else:
            self.groups_timed_out += 1
        answers = {t: a["answer"] for t, a in sample.answers.items()}
        labels = {t: a.get("labels") for t, a in sample.answers.items()}
        votes = LabelVotes(labels)
        agreement = votes.agreement() if votes.counts else leave_one_out_agreement(answers)
        alerts: list[DriftRecord] = []
        for teacher, peer in self._peer_signals(sample, agreement).items():
            if any(v is not None for v in peer.values()):
                alerts.extend(self.bank.update(teacher, peer, at))
        group = self._group(sample, answers, labels)
        return StepOutput(alerts=self._note(alerts), groups=[group])

    def _peer_signals(self, sample: JoinedSample, agreement: dict[str, Any],
                      ) -> dict[str, dict[str, Any]]:
        """Each teacher's peer-relative signals, only those the bank watches."""
        watched = set(self.config.bank.signals) & set(PEER_SIGNALS)
        lengths = {t: a["length"] for t, a in sample.answers.items() if "length" in a}
        relative = peer_signals(lengths) if watched - {"agreement"} else {}
        out: dict[str, dict[str, Any]] = {}
        for teacher in sample.answers:
            row = {"agreement": agreement.get(teacher), **relative.get(teacher, {})}
            out[teacher] = {k: v for k, v in row.items() if k in watched}
        return out

    def _group(self, sample: JoinedSample, answers: dict[str, str | None],
               labels: dict[str, Any]) -> TeacherGroup:
        first = next(iter(sample.answers.values()))
        drift = {teacher: self.bank.drift_state(teacher) for teacher in sample.answers}
        return TeacherGroup(
            sample_id=sample.sample_id,
            prompt=first.get("prompt"),
            status="complete" if sample.status == "complete" else "timeout",
            answers=[TeacherAnswer(teacher=t, event_id=a["event_id"], output=a["output"],
                                   answer=a["answer"], labels=a.get("labels"),
                                   teacher_version=a.get("teacher_version"),
                                   produced_at=a.get("produced_at"))
                     for t, a in sample.answers.items()],
            consensus=self.consensus.decide(answers, labels),
            drift=drift,
            ground_truth=first.get("ground_truth"),
            completed_at=format_timestamp_float(self.joiner.watermark),
            images=image_refs(first.get("images")),
        )

    def _note(self, alerts: list[DriftRecord]) -> list[DriftRecord]:
        for alert in alerts:
            self.last_alert[alert.teacher] = alert.to_dict()
        return alerts

    def counters(self) -> dict[str, Any]:
        return {
            "events": dict(sorted(self.events.items())),
            "duplicates": self.duplicates,
            "groups_completed": self.groups_completed,
            "groups_timed_out": self.groups_timed_out,
            "groups_open": self.joiner.open_count,
            "join_overflow": self.joiner.overflow,
            "dedup_overflow": self.dedup.overflow,
            "rejected": dict(sorted(self.rejected.items())),
            "teacher_overflow": self.roster.overflow,
            "stray_answers": self.joiner.strays,
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "bank": self.bank.to_state(),
            "joiner": self.joiner.to_state(),
            "dedup": self.dedup.to_state(),
            "roster": self.roster.to_state(),
            "consensus": self.consensus.to_state(),
            "counters": self.counters(),
            "last_alert": self.last_alert,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"pipeline state version {state.get('version')!r}, "
                             f"expected {STATE_VERSION}")
        self.bank = DetectorBank.from_state(state["bank"])
        self.joiner.load_state(state["joiner"])
        self.dedup.load_state(state["dedup"])
        if "consensus" in state:  # checkpoints written before it start from the prior
            self.consensus.load_state(state["consensus"])
        c = state["counters"]
        self.events = Counter(c["events"])
        self.rejected = Counter(c.get("rejected", {}))
        self.roster.load_state(state.get("roster", {"names": list(c["events"]),
                                                    "overflow": 0}))
        self.duplicates = c["duplicates"]
        self.groups_completed = c["groups_completed"]
        self.groups_timed_out = c["groups_timed_out"]
        self.last_alert = state["last_alert"]

    def run(self, events: Iterable[TeacherEvent], flush: bool = True) -> StepOutput:
        """Process a finite stream; the offline path of replay and benchmarks."""
        out = StepOutput()
        for event in events:
            out.extend(self.process(event))
        if flush:
            out.extend(self.flush())
        return out


def _answer_payload(event: TeacherEvent, answer: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": event.event_id,
        "output": event.output,
        "answer": answer if isinstance(answer, str) else None,
        "produced_at": format_timestamp(event.produced_at),
    }
    for name in ("labels", "teacher_version", "prompt", "ground_truth"):
        value = getattr(event, name)
        if value is not None:
            payload[name] = value
    if event.images:  # JSON-ready: the payload is part of the checkpointed join state
        payload["images"] = [ref.to_dict() for ref in event.images]
    return payload


def format_timestamp_float(ts: float) -> str | None:
    if ts == float("-inf"):
        return None
    return format_timestamp(datetime.fromtimestamp(ts, UTC))
