"""A completed teacher group: all answers to one sample plus each teacher's drift state.

This is the record ``distill serve`` emits to the groups topic and the archive, and what
the trainer turns into preference groups (1 consensus positive, N teacher negatives).

>>> g = TeacherGroup(sample_id="s1", prompt="p", status="complete",
...                  answers=[TeacherAnswer("a", "e1", "out", "yes")],
...                  consensus=Consensus("yes", support=1, tie=False),
...                  drift={"a": DriftState(evidence=0.0, in_drift=False)})
>>> TeacherGroup.from_json(g.to_json()) == g
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import orjson

from detectors.bank import TeacherDriftState
from stream.answers import parse_labels
from stream.images import ImageRef


@dataclass(frozen=True, slots=True)
class TeacherAnswer:
    teacher: str
    event_id: str
    output: str
    answer: str | None
    labels: dict[str, Any] | None = None
    teacher_version: str | None = None  # for experiments only; detectors never read it
    produced_at: str | None = None


@dataclass(frozen=True, slots=True)
class Consensus:
    """The group's decided answer (``tie`` when the top choice was shared) and, for
    structured answers, its decided label per key (one per finding).

    For structured answers the labels are what a teacher is judged by: each key is decided
    on its own (by reliability in the monitor), while the whole answer string of several
    noisy multi-key answers is nearly always a tie between strings.

    >>> c = Consensus("a=1; b=2", 1, True, {"a": "1", "b": "3"})
    >>> c.agreement("a=1; b=2"), c.agrees("b=3; a=1"), Consensus("yes", 2, False).agrees("yes")
    (0.5, True, True)
    """

    answer: str | None
    support: int
    tie: bool
    labels: dict[str, str] | None = None

    def agreement(self, answer: str | None, labels: Mapping[str, Any] | None = None) -> float:
        """The share of the consensus labels that an answer states (its ``labels``, else
        those parsed from ``answer``); without consensus labels, 1.0 for the consensus
        answer and 0.0 otherwise."""
        if not self.labels:
            return float(self.answer is not None and answer == self.answer)
        said = labels if labels is not None else parse_labels(answer)
        if not said:
            return 0.0
        hits = sum(said.get(k) is not None and str(said[k]) == v for k, v in self.labels.items())
        return hits / len(self.labels)

    def agrees(self, answer: str | None, labels: Mapping[str, Any] | None = None) -> bool:
        """Whether an answer is the consensus (every consensus label, if structured)."""
        return self.agreement(answer, labels) == 1.0


DriftState = TeacherDriftState  # each teacher's state when the group completed, as the bank
# reports it (one type: the group carries the bank's record as it is)


@dataclass(frozen=True, slots=True)
class TeacherGroup:
    sample_id: str
    prompt: str | None
    status: Literal["complete", "timeout"]
    answers: list[TeacherAnswer]
    consensus: Consensus
    drift: dict[str, DriftState]
    ground_truth: Any = None  # experiments only; never shown to a training stage
    completed_at: str | None = None
    images: tuple[ImageRef, ...] | None = None  # the case's images, by reference
    truncated: int | None = None  # original JSON size when cut to fit a Kafka record

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson serialises (slotted) dataclasses natively

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TeacherGroup:
        return cls(
            sample_id=d["sample_id"],
            prompt=d.get("prompt"),
            status=d["status"],
            answers=[TeacherAnswer(**a) for a in d["answers"]],
            consensus=Consensus(**d["consensus"]),
            drift={t: DriftState(**s) for t, s in d.get("drift", {}).items()},
            ground_truth=d.get("ground_truth"),
            completed_at=d.get("completed_at"),
            images=image_refs(d.get("images")),
            truncated=d.get("truncated"),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> TeacherGroup:
        return cls.from_dict(orjson.loads(raw))


def image_refs(value: Any) -> tuple[ImageRef, ...] | None:
    """References from their JSON form (a list of ``{"uri", "sha256"}``) or as they are."""
    if not value:
        return None
    return tuple(r if isinstance(r, ImageRef) else ImageRef(r["uri"], r["sha256"])
                 for r in value)


TRUNCATION_MARKER = " ...[truncated from {n} characters; the whole group is in the archive]"


def fit_record(group: TeacherGroup, payload: bytes, limit: int) -> bytes:
    """``payload`` (the group's JSON) if it fits in ``limit`` bytes, else the group with its
    texts cut to fit: the rule for a group too big for one Kafka record.

    The longest texts (answers' outputs, the prompt) are cut first, each to a common length
    (halved until the group fits), and end with :data:`TRUNCATION_MARKER`; ``truncated``
    holds the original size. Answers, labels, consensus and drift are kept whole, and the serve
    archive keeps the whole group. The trainer does not train on a cut group.

    >>> g = TeacherGroup("s", "p", "complete", [TeacherAnswer("a", "e", "x" * 5000, "y")],
    ...                  Consensus("y", 1, False), {})
    >>> cut = TeacherGroup.from_json(fit_record(g, g.to_json(), 2000))
    >>> len(cut.to_json()) <= 2000, cut.truncated, cut.answers[0].answer
    (True, 5321, 'y')
    """
    if len(payload) <= limit:
        return payload
    texts = [a.output for a in group.answers] + [group.prompt or ""]
    cap = max(len(t) for t in texts)
    while cap > 0:
        cap //= 2
        cut = _cut(group, cap, len(payload))
        data = cut.to_json()
        if len(data) <= limit:
            return data
    data = _cut(group, 0, len(payload)).to_json()
    if len(data) > limit:
        raise ValueError(f"group {group.sample_id!r} does not fit in {limit} bytes even "
                         f"without its texts ({len(data)} bytes)")
    return data


def _cut(group: TeacherGroup, cap: int, original: int) -> TeacherGroup:
    def short(text: str | None) -> str | None:
        if text is None or len(text) <= cap:
            return text
        return text[:cap] + TRUNCATION_MARKER.format(n=len(text))

    return replace(group, prompt=short(group.prompt), truncated=original,
                   answers=[replace(a, output=short(a.output) or "") for a in group.answers])
