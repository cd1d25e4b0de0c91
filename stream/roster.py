"""The bounded set of teachers the monitor tracks, whatever names the stream carries.

Each tracked teacher costs detectors, counters, metric series and checkpoint bytes, so a
stream of distinct (stray, corrupt or hostile) teacher names must not grow them without
bound. The configured teachers are always tracked; other names are admitted as they first
appear until ``max_teachers`` are tracked, and every later new name is refused (the caller
dead-letters it as ``teacher_overflow``) and counted in ``overflow``.

>>> r = TeacherRoster(configured=["a"], max_teachers=2)
>>> [r.admit(t) for t in ["a", "b", "c", "b", "a"]], r.overflow, sorted(r.names)
([True, True, False, True, True], 1, ['a', 'b'])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

DEFAULT_MAX_TEACHERS = 64  # a deployment runs a handful of teachers; 64 leaves room


class TeacherRoster:
    def __init__(self, configured: Iterable[str] = (),
                 max_teachers: int = DEFAULT_MAX_TEACHERS) -> None:
        self.names: set[str] = set(configured)
        self.max_teachers = max_teachers
        self.overflow = 0

    def admit(self, teacher: str) -> bool:
        """True if ``teacher`` is (now) tracked; False, counted, when the roster is full."""
        if teacher in self.names:
            return True
        if len(self.names) >= self.max_teachers:
            self.overflow += 1
            return False
        self.names.add(teacher)
        return True

    def to_state(self) -> dict[str, Any]:
        return {"names": sorted(self.names), "overflow": self.overflow}

    def load_state(self, state: dict[str, Any]) -> None:
        self.names |= set(state["names"])
        self.overflow = state["overflow"]
