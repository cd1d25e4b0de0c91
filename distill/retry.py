"""The one retry policy of the daemons (`distill serve`, `distill train --follow`).

A poll that fails is retried after an exponentially growing pause (0.5 s, 1 s, 2 s, ...
up to 30 s), reset by the first success: a broker restart is ridden out without spinning,
and a short blip costs half a second. Hand-written (a dozen lines) because the daemons'
loops poll forever and must stay responsive to a stop flag while they wait, which
decorator-style retry libraries (tenacity, backoff) do not model.

>>> b = Backoff()
>>> [b.failed() for _ in range(8)]
[0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
>>> b.succeeded(); b.failed()
0.5
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Pauses between retries: ``initial * factor**k``, capped at ``maximum``."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    _next: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.maximum < self.initial:
            raise ValueError("Backoff needs initial > 0, factor >= 1, maximum >= initial")

    def failed(self) -> float:
        """The pause before the next try (seconds); each failure doubles it."""
        delay = self._next or self.initial
        self._next = min(delay * self.factor, self.maximum)
        return delay

    def succeeded(self) -> None:
        """Back to the shortest pause."""
        self._next = 0.0
