"""Join teacher answers by ``sample_id`` until every expected teacher answered or time runs out.

Time is event time: the watermark is the largest ``produced_at`` seen, so a replay of the
same stream makes the same groups whatever the speed. A sample opened at ``t`` times out
once the watermark passes ``t + timeout_s``. The buffer is bounded: when ``max_open``
samples are open the oldest is closed early (as a timeout) and the overflow is counted.

Bad clocks and stray names cannot corrupt it. :meth:`SampleJoiner.is_late` flags an answer
older than the watermark minus ``allowed_lateness_s`` (it could only open a group that
times out at once with one answer); the caller dead-letters it as ``late`` before
:meth:`~SampleJoiner.add`, so it neither makes a group nor moves the watermark. The expected
set is configured, or learned during the first timeout span and then fixed: an answer
from a teacher outside it afterwards is counted in ``strays`` and joins no group, so a stray
name never makes a group wait.

>>> j = SampleJoiner(expected=["a", "b"], timeout_s=60)
>>> j.add("s1", "a", {"x": 1}, 0.0)
[]
>>> [(s.sample_id, s.status, sorted(s.answers)) for s in j.add("s1", "b", {"x": 2}, 1.0)]
[('s1', 'complete', ['a', 'b'])]
>>> j.add("s2", "a", {}, 2.0), [s.status for s in j.add("s3", "a", {}, 100.0)]
([], ['timeout'])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(slots=True)
class JoinedSample:
    """One sample's answers, keyed by teacher, in arrival order."""

    sample_id: str
    opened_at: float
    answers: dict[str, Any] = field(default_factory=dict)
    status: Literal["open", "complete", "timeout"] = "open"


DEFAULT_TIMEOUT_S = 300.0
"""Seconds of event time a sample waits for its teachers (``serve.group_timeout_s``)."""
DEFAULT_MAX_OPEN = 10_000
"""Open samples held at most before the oldest is closed (``serve.join_buffer_max``)."""


class SampleJoiner:
    """Bounded, event-time join of answers by sample.

    ``expected`` fixes the teachers a group waits for; when None the set is learned: every
    teacher seen during the first timeout span of event time (long enough to have heard
    from every active teacher) is expected, and until then groups close by timeout only, so
    the first samples are not cut short before all teachers were seen. After that span the
    set is fixed. A teacher answering a sample twice keeps its first answer.
    ``allowed_lateness_s`` defaults to ``timeout_s``.
    """

    def __init__(self, expected: Iterable[str] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_open: int = DEFAULT_MAX_OPEN,
                 allowed_lateness_s: float | None = None) -> None:
        self.expected = frozenset(expected) if expected else None
        self.timeout_s = timeout_s
        self.max_open = max_open
        self.allowed_lateness_s = timeout_s if allowed_lateness_s is None else allowed_lateness_s
        self.strays = 0
        self._open: dict[str, JoinedSample] = {}  # insertion order = opening order
        self._learned: set[str] = set()
        self.watermark = float("-inf")
        self.first_seen: float | None = None
        self.overflow = 0

    @property
    def open_count(self) -> int:
        return len(self._open)

    def expected_teachers(self) -> frozenset[str]:
        return self.expected if self.expected is not None else frozenset(self._learned)

    def is_late(self, at: float) -> bool:
        """Whether an answer at ``at`` is older than the watermark allows (``late``)."""
        return at < self.watermark - self.allowed_lateness_s

    def add(self, sample_id: str, teacher: str, answer: Any, at: float) -> list[JoinedSample]:
        """Add one answer; returns the samples this closed (complete, timed out, evicted)."""
        was_learning = not self.learned
        if was_learning:
            self._learned.add(teacher)
        self.first_seen = at if self.first_seen is None else self.first_seen
        self.watermark = max(self.watermark, at)
        closed = self._complete_all() if was_learning and self.learned else []
        closed += self._expire()
        if teacher not in self.expected_teachers():
            self.strays += 1  # counted, never joined: it must not hold a group open
            return closed
        sample = self._open.get(sample_id)
        if sample is None:
            sample = JoinedSample(sample_id, opened_at=at)
            self._open[sample_id] = sample
        sample.answers.setdefault(teacher, answer)
        if self.learned and self.expected_teachers() <= sample.answers.keys():
            sample.status = "complete"
            closed.append(self._open.pop(sample_id))
        while len(self._open) > self.max_open:
            self.overflow += 1
            closed.append(self._close_oldest())
        return closed

    @property
    def learned(self) -> bool:
        """Whether the expected set is known (configured, or one timeout span has passed)."""
        if self.expected is not None:
            return True
        return self.first_seen is not None and self.watermark >= self.first_seen + self.timeout_s

    def _complete_all(self) -> list[JoinedSample]:
        expected = self.expected_teachers()
        done = [s for s in self._open.values() if expected <= s.answers.keys()]
        for sample in done:
            sample.status = "complete"
            del self._open[sample.sample_id]
        return done

    def flush(self) -> list[JoinedSample]:
        """Close every open sample as a timeout (end of a finite stream)."""
        closed = []
        while self._open:
            closed.append(self._close_oldest())
        return closed

    def _expire(self) -> list[JoinedSample]:
        closed = []
        deadline = self.watermark - self.timeout_s
        while self._open:
            oldest = next(iter(self._open.values()))
            if oldest.opened_at > deadline:
                break
            closed.append(self._close_oldest())
        return closed

    def _close_oldest(self) -> JoinedSample:
        sample_id = next(iter(self._open))
        sample = self._open.pop(sample_id)
        sample.status = "timeout"
        return sample

    def to_state(self) -> dict[str, Any]:
        return {
            "open": [[s.sample_id, s.opened_at, s.answers] for s in self._open.values()],
            "learned": sorted(self._learned),
            "watermark": self.watermark if self.watermark != float("-inf") else None,
            "first_seen": self.first_seen,
            "overflow": self.overflow,
            "strays": self.strays,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._open = {sid: JoinedSample(sid, opened_at, dict(answers))
                      for sid, opened_at, answers in state["open"]}
        self._learned = set(state["learned"])
        wm = state["watermark"]
        self.watermark = float("-inf") if wm is None else wm
        self.first_seen = state["first_seen"]
        self.overflow = state["overflow"]
        self.strays = state.get("strays", 0)
