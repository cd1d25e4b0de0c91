"""Teacher-output streams: events and their contract, Kafka I/O, signals, join, archive.

``from stream import TeacherProducer`` loads the producer (and a Kafka client) on first use
only, so importing the event decoder stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["InvalidEvent", "TeacherProducer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from stream import producer

        return getattr(producer, name)
    raise AttributeError(f"module 'stream' has no attribute {name!r}")
