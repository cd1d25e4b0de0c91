"""A bounded window of recently seen event ids, so redelivered events are counted once.

Kafka delivers at least once (a producer retry, a replayed range after a crash), so the
monitor drops an ``event_id`` it has already processed. The window is bounded: past
``max_size`` ids the oldest is forgotten and the overflow is counted.

>>> w = DedupWindow(max_size=2)
>>> [w.seen_before(e) for e in ["a", "b", "a", "c", "a"]]
[False, False, True, False, False]
>>> w.seen_before("c"), w.overflow  # "a" had fallen out when "c" came in; "c" is still held
(True, 2)
"""

from __future__ import annotations

from typing import Any

DEFAULT_WINDOW = 100_000
"""Event ids remembered by default (``serve.dedup_window`` takes its default from here)."""


class DedupWindow:
    def __init__(self, max_size: int = DEFAULT_WINDOW) -> None:
        self.max_size = max_size
        self._ids: dict[str, None] = {}  # insertion-ordered set
        self.overflow = 0

    def __len__(self) -> int:
        return len(self._ids)

    def seen_before(self, event_id: str) -> bool:
        """True if ``event_id`` is in the window; otherwise remember it and return False."""
        if event_id in self._ids:
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.max_size:
            del self._ids[next(iter(self._ids))]
            self.overflow += 1
        return False

    def to_state(self) -> dict[str, Any]:
        return {"ids": list(self._ids), "overflow": self.overflow}

    def load_state(self, state: dict[str, Any]) -> None:
        self._ids = dict.fromkeys(state["ids"])
        self.overflow = state["overflow"]
