"""A broker liveness probe: a background thread that times a cheap round trip.

The main consumer cannot tell a stalled broker from a quiet topic (poll just returns
nothing), so a separate client asks for the topic's end offsets every ``interval_s``. The
probe reports the age of the last answer; ``/healthz`` and ``distill_broker_up`` read it,
and the end offsets give consumer lag for free.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from stream.kafka import KafkaSettings

log = logging.getLogger(__name__)


class BrokerProbe:
    def __init__(self, settings: KafkaSettings, topic: str, interval_s: float = 1.0,
                 stall_after_s: float = 5.0) -> None:
        self.settings = settings
        self.topic = topic
        self.interval_s = interval_s
        self.stall_after_s = stall_after_s
        self.last_ok: float | None = None
        self.end_offsets: dict[int, int] = {}
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-probe", daemon=True)
        self._client: KafkaConsumer | None = None

    def start(self) -> BrokerProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def stalled_for(self) -> float | None:
        """Seconds since the broker last answered, or None if it never has."""
        return None if self.last_ok is None else time.monotonic() - self.last_ok

    @property
    def healthy(self) -> bool:
        age = self.stalled_for
        return age is not None and age < self.stall_after_s

    def status(self) -> dict[str, Any]:
        age = self.stalled_for
        return {"broker_reachable": self.healthy,
                "seconds_since_broker_answer": None if age is None else round(age, 3),
                "last_error": self.last_error}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._round_trip()
                self.last_ok = time.monotonic()
                self.last_error = None
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
                self._close_client()
            self._stop.wait(self.interval_s)
        self._close_client()

    def _round_trip(self) -> None:
        if self._client is None:
            self._client = KafkaConsumer(**self.settings.common(), enable_auto_commit=False,
                                         request_timeout_ms=max(1000, int(self.interval_s * 2000)))
        parts = self._client.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        if tps:
            ends = self._client.end_offsets(tps, timeout_ms=int(self.stall_after_s * 1000))
            self.end_offsets = {tp.partition: off for tp, off in ends.items()}

    def _close_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
