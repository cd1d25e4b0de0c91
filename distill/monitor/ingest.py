"""The ingest stage of one input partition: events in, observations and teacher groups out.

Per event: dedupe by ``event_id``, compute the teacher's signals (one :class:`Observation`)
and join by ``sample_id``. When a sample's group closes (all expected teachers answered, or
the event-time timeout passed) the consensus answer is taken, each teacher's agreement with
the others becomes an observation, and the group is emitted with each teacher's drift state
as the detect stage last published it. With an embedder (:mod:`distill.monitor.embeddings`)
an event's observation also carries its output's ``embedding``, and the group's closing
observation each teacher's ``peer_distance`` to the centroid of the others' embeddings of
the same sample; :meth:`IngestStage.prepare` encodes a whole poll's outputs in one call.
The detectors are not here: a teacher's answers are spread over every input partition, so
its detectors live in the detect stage (:mod:`distill.monitor.detect`), which sees all of
them in one canonical order.

Observations carry event time, never the partition's clock: an event's is its
``produced_at``, an agreement's is when the group's answers were all in (the latest
answer's time) or, for a timeout, the group's deadline (opened + timeout). Both depend on
the sample alone. :meth:`IngestStage.low_watermark` (the partition's watermark minus the
allowed lateness) bounds every later observation; agreements are stamped no earlier than
it, so the bound holds even for a group that closed late.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from detectors.bank import TeacherDriftState
from distill.consensus import LabelVotes, ReliabilityConsensus
from distill.groups import TeacherAnswer, TeacherGroup, image_refs
from distill.monitor.observations import AGREEMENT, EVENT, Observation, pack_vector, unpack_vector
from stream.dedup import DedupWindow
from stream.events import Invalid, TeacherEvent, format_timestamp
from stream.join import JoinedSample, SampleJoiner
from stream.ratelog import RateLimitedLog
from stream.roster import TeacherRoster
from stream.signals import PEER_SIGNALS, event_signals, leave_one_out_agreement, peer_signals

if TYPE_CHECKING:
    from distill.monitor.pipeline import PipelineConfig

log = logging.getLogger(__name__)
NO_DRIFT = TeacherDriftState(0.0, False, [])
DriftView = Callable[[str], TeacherDriftState]  # teacher -> its latest drift state


@dataclass
class IngestOutput:
    """What one event produced: observations for the detect stage, closed groups."""

    observations: list[Observation] = field(default_factory=list)
    groups: list[TeacherGroup] = field(default_factory=list)
    duplicate: bool = False
    rejected: Invalid | None = None  # refused at admission: dead-letter it with this

    def extend(self, other: IngestOutput) -> None:
        self.observations.extend(other.observations)
        self.groups.extend(other.groups)


class IngestStage:
    """Dedup, signals, join and consensus of one input partition (module docstring)."""

    def __init__(self, config: PipelineConfig, source: int = 0,
                 drift_view: DriftView | None = None) -> None:
        self.lateness_s = config.lateness_s
        self.max_clock_skew_s = config.max_clock_skew_s
        self.joiner = SampleJoiner(config.expected_teachers or None, config.group_timeout_s,
                                   config.join_buffer_max, self.lateness_s)
        self.roster = TeacherRoster(config.expected_teachers, config.max_teachers)
        self.dedup = DedupWindow(config.dedup_window)
        self.consensus = ReliabilityConsensus(config.consensus)
        self.hist_bins = config.bank.hist_bins
        self.watched_peer = frozenset(config.bank.signals) & frozenset(PEER_SIGNALS)  # the bank's
        self.embedder = config.embedder if config.bank.embedding_dim else None
        if self.embedder is None:
            self.watched_peer -= {"peer_distance"}
        elif self.embedder.dim != config.bank.embedding_dim:
            raise ValueError(f"the embedder gives {self.embedder.dim} dimensions, the bank's "
                             f"embedding_dim is {config.bank.embedding_dim}")
        self._prepared: dict[str, tuple[float, ...]] = {}  # event_id -> embedding
        self.source = source
        self.drift_view: DriftView = drift_view or (lambda _: NO_DRIFT)
        self.events: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._strays = RateLimitedLog(log)
        self.duplicates = 0
        self.groups_completed = 0
        self.groups_timed_out = 0

    def low_watermark(self) -> float:
        """No later observation of this partition is earlier than this (module docstring)."""
        return self.joiner.watermark - self.lateness_s

    def prepare(self, events: list[TeacherEvent]) -> None:
        """Encode these events' outputs in one call before they are processed one by one
        (a poll's worth: batched encoding is several times cheaper per output)."""
        if self.embedder is None or not events:
            return
        self._prepared.clear()  # the last batch's leftovers: refused or duplicate events
        vecs = self.embedder.encode([e.output for e in events])
        for event, vec in zip(events, vecs, strict=True):
            self._prepared[event.event_id] = tuple(vec.tolist())

    def _embedding(self, event: TeacherEvent) -> tuple[float, ...] | None:
        if self.embedder is None:
            return None
        vec = self._prepared.pop(event.event_id, None)
        if vec is None:
            vec = tuple(self.embedder.encode([event.output])[0].tolist())
        return vec

    def process(self, event: TeacherEvent, offset: int = -1,
                now: float | None = None) -> IngestOutput:
        """One event; ``now`` (wall-clock epoch seconds) enables the future-timestamp check
        (serve passes it; replay of a recorded stream does not). A refused event changes
        nothing and comes back with ``rejected`` set."""
        at = event.produced_at.timestamp()
        rejected = self._admit(event, at, now)
        if rejected is not None:
            self.rejected[rejected.reason] += 1
            return IngestOutput(rejected=rejected)
        if self.dedup.seen_before(event.event_id):
            self.duplicates += 1
            return IngestOutput(duplicate=True)
        self.events[event.teacher] += 1
        signals: dict[str, Any] = dict(event_signals(event, self.hist_bins))
        embedding = self._embedding(event)
        if embedding is not None:
            signals["embedding"] = embedding
        out = IngestOutput(observations=[Observation(
            event.teacher, at, event.sample_id, EVENT, event.event_id, signals, self.source,
            offset, 0)])
        payload = _answer_payload(event, at, signals.get("answer"))
        payload["length"] = signals["length"]
        if embedding is not None:  # JSON-ready and small: the join state is checkpointed
            payload["embedding"] = pack_vector(embedding)
        strays = self.joiner.strays
        for sample in self.joiner.add(event.sample_id, event.teacher, payload, at):
            self._close(sample, out, offset)
        if self.joiner.strays > strays:
            self._strays.note("stray teacher", "%r answered but is not in the expected set %s; "
                              "its answers join no group", event.teacher[:100],
                              sorted(self.joiner.expected_teachers())[:20])
        return out

    def _admit(self, event: TeacherEvent, at: float, now: float | None) -> Invalid | None:
        if now is not None and at > now + self.max_clock_skew_s:
            return Invalid("future_timestamp", f"{format_timestamp(event.produced_at)} is "
                           f"more than {self.max_clock_skew_s:g} s ahead of the clock")
        if self.joiner.is_late(at):
            return Invalid("late", f"{format_timestamp(event.produced_at)} is before the "
                           f"watermark {format_timestamp_float(self.joiner.watermark)} minus "
                           f"{self.joiner.allowed_lateness_s:g} s")
        if not self.roster.admit(event.teacher):
            return Invalid("teacher_overflow", f"{len(self.roster.names)} teachers tracked "
                           f"already (serve.max_teachers)")
        return None

    def flush(self, offset: int, first_seq: int) -> IngestOutput:
        """Close every open group (the end of a finite stream)."""
        out = IngestOutput()
        for sample in self.joiner.flush():
            self._close(sample, out, offset, first_seq)
        return out

    def _close(self, sample: JoinedSample, out: IngestOutput, offset: int,
               first_seq: int = 0) -> None:
        if sample.status == "complete":
            self.groups_completed += 1
        else:
            self.groups_timed_out += 1
        answers = {t: a["answer"] for t, a in sample.answers.items()}
        labels = {t: a.get("labels") for t, a in sample.answers.items()}
        votes = LabelVotes(labels)
        agreement = votes.agreement() if votes.counts else leave_one_out_agreement(answers)
        at = max(self._closed_at(sample), self.low_watermark())
        seq = first_seq + len(out.observations)
        for teacher, peer in self._peer_signals(sample, agreement).items():
            if any(v is not None for v in peer.values()):
                seq += 1
                out.observations.append(Observation(teacher, at, sample.sample_id, AGREEMENT,
                                                    "", peer, self.source, offset, seq))
        out.groups.append(self._group(sample, answers, labels))

    def _peer_signals(self, sample: JoinedSample, agreement: dict[str, Any],
                      ) -> dict[str, dict[str, Any]]:
        """Each teacher's peer-relative signals, only those the bank watches."""
        watched = self.watched_peer
        lengths = {t: a["length"] for t, a in sample.answers.items() if "length" in a}
        embeddings = ({t: unpack_vector(a["embedding"]) for t, a in sample.answers.items()
                       if a.get("embedding") is not None} if "peer_distance" in watched else None)
        relative = peer_signals(lengths, embeddings) if watched - {"agreement"} else {}
        out: dict[str, dict[str, Any]] = {}
        for teacher in sample.answers:
            row = {"agreement": agreement.get(teacher), **relative.get(teacher, {})}
            out[teacher] = {k: v for k, v in row.items() if k in watched}
        return out

    def _closed_at(self, sample: JoinedSample) -> float:
        """When the group's answers were all in (a complete group), else its deadline:
        properties of the sample, not of the partition it travelled on."""
        last: float = max(a["at"] for a in sample.answers.values())
        if sample.status == "complete":
            return last
        return max(last, sample.opened_at + self.joiner.timeout_s)

    def _group(self, sample: JoinedSample, answers: dict[str, str | None],
               labels: dict[str, Any]) -> TeacherGroup:
        first = next(iter(sample.answers.values()))
        drift = {teacher: self.drift_view(teacher) for teacher in sample.answers}
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
        return {"joiner": self.joiner.to_state(), "dedup": self.dedup.to_state(),
                "roster": self.roster.to_state(), "consensus": self.consensus.to_state(),
                "counters": self.counters()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.joiner.load_state(state["joiner"])
        self.dedup.load_state(state["dedup"])
        self.consensus.load_state(state["consensus"])
        c = state["counters"]
        self.events = Counter(c["events"])
        self.rejected = Counter(c.get("rejected", {}))
        self.roster.load_state(state["roster"])
        self.duplicates = c["duplicates"]
        self.groups_completed = c["groups_completed"]
        self.groups_timed_out = c["groups_timed_out"]


def _answer_payload(event: TeacherEvent, at: float, answer: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": event.event_id,
        "output": event.output,
        "answer": answer if isinstance(answer, str) else None,
        "produced_at": format_timestamp(event.produced_at),
        "at": at,  # the event time the agreement is stamped from
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
