"""The detect stage: each teacher's detectors, fed in one canonical order.

It owns the teachers whose observations reach it (on Kafka: the teachers of one partition
of the observations topic, so one owner per teacher). Observations are buffered and
released to the :class:`~detectors.bank.DetectorBank` in :attr:`Observation.key` order once
every input partition's watermark has passed them, so the bank sees the same sequence,
and raises the same alerts at the same per-teacher indices, whether the input had 1, 4 or 8
partitions, and in ``distill replay``. The buffer, the watermarks and the last position
accepted from each input partition are part of the state, so a restored stage continues
exactly, and drops the observations an ingest partition re-sends after its own restart.

An observation behind what was already released (an event later than the allowed
lateness) is applied at once and counted as ``late``: its order is then the arrival order.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from detectors.bank import BankConfig, DetectorBank, DriftRecord
from distill.monitor.observations import EVENT, Observation, Watermark, from_doc


@dataclass
class DetectCounters:
    observations: int = 0  # applied to the bank
    duplicates: int = 0  # re-sent by a restarted ingest partition, dropped
    late: int = 0  # arrived behind the released frontier, applied at once


@dataclass
class DetectStage:
    bank_config: BankConfig = field(default_factory=BankConfig)
    sources: int = 1  # input partitions: every one's watermark gates the release

    def __post_init__(self) -> None:
        self.bank = DetectorBank(self.bank_config)
        self.watermarks: dict[int, float] = {}
        self.accepted: dict[int, tuple[int, int]] = {}  # source -> last (offset, seq)
        self.frontier = -math.inf  # everything earlier was released
        self.counters = DetectCounters()
        self.last_alert: dict[str, dict[str, Any]] = {}
        self.events: Counter[str] = Counter()  # per teacher: its event index is this - 1
        self._heap: list[tuple[tuple[float, str, int, str, str], int, Observation]] = []
        self._pushed = 0

    @property
    def buffered(self) -> int:
        return len(self._heap)

    def add(self, obs: Observation) -> list[DriftRecord]:
        """Buffer one observation; returns alerts only for a late one (applied at once)."""
        last = self.accepted.get(obs.source)
        if last is not None and obs.position <= last:
            self.counters.duplicates += 1
            return []
        self.accepted[obs.source] = obs.position
        if obs.time < self.frontier:
            self.counters.late += 1
            return self._apply(obs)
        self._pushed += 1
        heapq.heappush(self._heap, (obs.key, self._pushed, obs))
        return []

    def watermark(self, mark: Watermark) -> None:
        self.sources = max(self.sources, mark.sources)
        if mark.time > self.watermarks.get(mark.source, -math.inf):
            self.watermarks[mark.source] = mark.time

    def release(self) -> list[DriftRecord]:
        """Apply, in canonical order, every buffered observation all sources have passed."""
        marks = self.watermarks
        frontier = min(marks.get(s, -math.inf) for s in range(self.sources))
        if frontier <= self.frontier:
            return []
        self.frontier = frontier
        alerts: list[DriftRecord] = []
        heap = self._heap
        while heap and heap[0][0][0] < frontier:
            alerts.extend(self._apply(heapq.heappop(heap)[2]))
        return alerts

    def _apply(self, obs: Observation) -> list[DriftRecord]:
        self.counters.observations += 1
        if obs.kind == EVENT:
            self.events[obs.teacher] += 1
        alerts = self.bank.update(obs.teacher, obs.signals, obs.time)
        for alert in alerts:
            self.last_alert[alert.teacher] = alert.to_dict()
        return alerts

    def to_state(self) -> dict[str, Any]:
        return {
            "bank": self.bank.to_state(),
            "sources": self.sources,
            "watermarks": [[s, _num(t)] for s, t in sorted(self.watermarks.items())],
            "accepted": [[s, *p] for s, p in sorted(self.accepted.items())],
            "frontier": _num(self.frontier),
            "buffer": [entry[2].to_doc() for entry in sorted(self._heap)],
            "counters": vars(self.counters).copy(),
            "events": dict(sorted(self.events.items())),
            "last_alert": self.last_alert,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.bank = DetectorBank.from_state(state["bank"])
        self.sources = state["sources"]
        self.watermarks = {s: _float(t) for s, t in state["watermarks"]}
        self.accepted = {s: (off, seq) for s, off, seq in state["accepted"]}
        self.frontier = _float(state["frontier"])
        observations = [from_doc(d) for d in state["buffer"]]
        self._heap = [(o.key, i, o) for i, o in enumerate(observations)]  # sorted: a heap
        self._pushed = len(self._heap)
        self.counters = DetectCounters(**state["counters"])
        self.events = Counter(state["events"])
        self.last_alert = state["last_alert"]


def _num(x: float) -> float | str:
    """JSON has no infinities: they travel as strings."""
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def _float(x: float | str) -> float:
    return float(x)
