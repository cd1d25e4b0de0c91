"""The ingest stage of one input partition: events in, observations and teacher groups out.

Per event: dedupe by ``event_id``, compute the teacher's signals (one :class:`Observation`)
and join by ``sample_id``. When a sample's group closes (all expected teachers answered, or
the event-time timeout passed) the consensus answer is taken, each teacher's agreement with
the others becomes an observation, and the group is emitted with each teacher's drift state
as the detect stage last published it. The detectors are not here: a teacher's answers are
spread over every input partition, so its detectors live in the detect stage
(:mod:`distill.monitor.detect`), which sees all of them in one canonical order.

Observations carry event time, never the partition's clock: an event's is its
``produced_at``, an agreement's is when the group's answers were all in (the latest
answer's time) or, for a timeout, the group's deadline (opened + timeout). Both depend on
the sample alone. :meth:`IngestStage.low_watermark` (the partition's watermark minus the
allowed lateness) bounds every later observation; agreements are stamped no earlier than
it, so the bound holds even for a group that closed late.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from detectors.bank import TeacherDriftState
from distill.consensus import LabelVotes, majority
from distill.groups import TeacherAnswer, TeacherGroup
from distill.monitor.observations import AGREEMENT, EVENT, Observation
from stream.dedup import DedupWindow
from stream.events import TeacherEvent, format_timestamp
from stream.join import JoinedSample, SampleJoiner
from stream.signals import PEER_SIGNALS, event_signals, leave_one_out_agreement, peer_signals

NO_DRIFT = TeacherDriftState(0.0, False, [])
DriftView = Callable[[str], TeacherDriftState]  # teacher -> its latest drift state


@dataclass
class IngestOutput:
    """What one event produced: observations for the detect stage, closed groups."""

    observations: list[Observation] = field(default_factory=list)
    groups: list[TeacherGroup] = field(default_factory=list)
    duplicate: bool = False

    def extend(self, other: IngestOutput) -> None:
        self.observations.extend(other.observations)
        self.groups.extend(other.groups)


class IngestStage:
    """Dedup, signals, join and consensus of one input partition (module docstring)."""

    def __init__(self, expected_teachers: tuple[str, ...], group_timeout_s: float,
                 join_buffer_max: int, dedup_window: int, lateness_s: float, hist_bins: int,
                 source: int = 0, drift_view: DriftView | None = None,
                 watched: tuple[str, ...] = PEER_SIGNALS) -> None:
        self.joiner = SampleJoiner(expected_teachers or None, group_timeout_s, join_buffer_max)
        self.dedup = DedupWindow(dedup_window)
        self.lateness_s = lateness_s
        self.hist_bins = hist_bins
        self.watched_peer = frozenset(watched) & frozenset(PEER_SIGNALS)  # the bank's
        self.source = source
        self.drift_view: DriftView = drift_view or (lambda _: NO_DRIFT)
        self.events: Counter[str] = Counter()
        self.duplicates = 0
        self.groups_completed = 0
        self.groups_timed_out = 0

    def low_watermark(self) -> float:
        """No later observation of this partition is earlier than this (module docstring)."""
        return self.joiner.watermark - self.lateness_s

    def process(self, event: TeacherEvent, offset: int = -1) -> IngestOutput:
        if self.dedup.seen_before(event.event_id):
            self.duplicates += 1
            return IngestOutput(duplicate=True)
        at = event.produced_at.timestamp()
        self.events[event.teacher] += 1
        signals = event_signals(event, self.hist_bins)
        out = IngestOutput(observations=[Observation(
            event.teacher, at, event.sample_id, EVENT, event.event_id, signals, self.source,
            offset, 0)])
        payload = _answer_payload(event, at, signals.get("answer"))
        payload["length"] = signals["length"]
        for sample in self.joiner.add(event.sample_id, event.teacher, payload, at):
            self._close(sample, out, offset)
        return out

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
        out.groups.append(self._group(sample, answers, votes))

    def _peer_signals(self, sample: JoinedSample, agreement: dict[str, Any],
                      ) -> dict[str, dict[str, Any]]:
        """Each teacher's peer-relative signals, only those the bank watches."""
        watched = self.watched_peer
        lengths = {t: a["length"] for t, a in sample.answers.items() if "length" in a}
        relative = peer_signals(lengths) if watched - {"agreement"} else {}
        out: dict[str, dict[str, Any]] = {}
        for teacher in sample.answers:
            row = {"agreement": agreement.get(teacher), **relative.get(teacher, {})}
            out[teacher] = {k: v for k, v in row.items() if k in watched}
        return out

    def _closed_at(self, sample: JoinedSample) -> float:
        """When the group's answers were all in (a complete group), else its deadline:
        properties of the sample, not of the partition it travelled on."""
        last = max(a["at"] for a in sample.answers.values())
        if sample.status == "complete":
            return last
        return max(last, sample.opened_at + self.joiner.timeout_s)

    def _group(self, sample: JoinedSample, answers: dict[str, str | None],
               votes: LabelVotes) -> TeacherGroup:
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
            consensus=majority(answers, labels=votes.majority()),
            drift=drift,
            ground_truth=first.get("ground_truth"),
            completed_at=format_timestamp_float(self.joiner.watermark),
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
        }

    def to_state(self) -> dict[str, Any]:
        return {"joiner": self.joiner.to_state(), "dedup": self.dedup.to_state(),
                "counters": self.counters()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.joiner.load_state(state["joiner"])
        self.dedup.load_state(state["dedup"])
        c = state["counters"]
        self.events = Counter(c["events"])
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
    return payload


def format_timestamp_float(ts: float) -> str | None:
    if ts == float("-inf"):
        return None
    return format_timestamp(datetime.fromtimestamp(ts, UTC))
