"""Log lines at a bounded rate per reason, with the count of what was held back.

Bad input can arrive at line rate; logging each message would flood the log and cost more
than processing it. Each reason is logged at most once per ``every_s`` seconds, and the line
says how many messages it stands for.

>>> t = [0.0]
>>> rl = RateLimitedLog(logging.getLogger("doc"), every_s=10, clock=lambda: t[0])
>>> [rl.note("late", "x") for _ in range(3)], rl.held("late")
([True, False, False], 2)
>>> t[0] = 11.0
>>> rl.note("late", "x"), rl.held("late")
(True, 0)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

LOG_EVERY_S = 10.0


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, every_s: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def held(self, reason: str) -> int:
        """Messages of ``reason`` noted since its last line."""
        return self._held.get(reason, 0)

    def note(self, reason: str, message: str, *args: object) -> bool:
        """Count one occurrence; log ``message % args`` (prefixed with the reason and the
        count) when ``reason`` was not logged in the last ``every_s``. True when logged."""
        count = self._held.get(reason, 0) + 1
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.every_s:
            self._held[reason] = count
            return False
        self._held[reason], self._last[reason] = 0, now
        self.logger.warning("%s (%d in the last %.0fs): " + message, reason, count,
                            self.every_s, *args)
        return True
