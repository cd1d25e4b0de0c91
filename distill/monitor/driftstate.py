"""Each teacher's latest drift state, read back from the compacted drift-state topic.

An ingest-only instance (``serve --role ingest``) owns no detectors, yet its groups carry
each teacher's drift state for drift-weighted training. It reads the topic the detect
stage publishes to (keyed by teacher, compacted: the latest record per teacher is the
state) with a plain consumer: every partition assigned, no consumer group, from the start.
"""

from __future__ import annotations

import logging

import orjson
from kafka import KafkaConsumer, TopicPartition

from detectors.bank import TeacherDriftState
from stream.kafka import KafkaSettings

log = logging.getLogger(__name__)


class DriftStateReader:
    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self.states: dict[str, TeacherDriftState] = {}
        self._consumer = KafkaConsumer(**settings.common(), enable_auto_commit=False,
                                       group_id=None, auto_offset_reset="earliest")
        parts = self._consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        self._consumer.seek_to_beginning(*tps)

    def poll(self) -> None:
        """Take in what arrived since the last call (never waits)."""
        for batch in self._consumer.poll(timeout_ms=0).values():
            for record in batch:
                try:
                    doc = orjson.loads(record.value)
                    self.states[doc["teacher"]] = TeacherDriftState(
                        float(doc["evidence"]), bool(doc["in_drift"]), list(doc["signals"]))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    log.warning("drift-state record at offset %d skipped: %s", record.offset,
                                exc)

    def close(self) -> None:
        self._consumer.close()
