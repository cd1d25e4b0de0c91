"""Dead-letter routing: a rejected message keeps its original bytes and gains its reason.

Headers carry the reason and where the message came from, so an operator can find and
replay it: ``dlq.reason``, ``dlq.detail``, ``dlq.topic``, ``dlq.partition``, ``dlq.offset``.
A message above :data:`~stream.kafka.MAX_RECORD_BYTES` (it was rejected as ``too_large``,
or the producer could not send it whole) is dead-lettered as its first
``MAX_RECORD_BYTES`` bytes with ``dlq.truncated: 1`` and ``dlq.original_size`` headers,
so it reaches the topic under every client and broker limit.

Every reason is also logged through :class:`~stream.ratelog.RateLimitedLog`, at most once
per ten seconds per reason with the number of messages it stands for, so a flood of bad
input cannot flood the log.
"""

from __future__ import annotations

import logging

from stream.events import Invalid
from stream.kafka import MAX_RECORD_BYTES, Headers, Record, Sink
from stream.ratelog import RateLimitedLog

DEFAULT_DLQ_TOPIC = "teacher-outputs.dlq"

log = logging.getLogger(__name__)


def dead_letter_headers(record: Record, invalid: Invalid) -> Headers:
    return [
        ("dlq.reason", invalid.reason.encode()),
        ("dlq.detail", invalid.detail[:500].encode("utf-8", "replace")),
        ("dlq.topic", record.topic.encode()),
        ("dlq.partition", str(record.partition).encode()),
        ("dlq.offset", str(record.offset).encode()),
    ]


def header_dict(headers: Headers) -> dict[str, str]:
    """Decode the headers of a dead-lettered record for display and tests."""
    return {k: v.decode("utf-8", "replace") for k, v in headers}


class DeadLetterSink:
    """Sends rejected records to the dead-letter topic through a shared producer."""

    def __init__(self, sink: Sink, topic: str = DEFAULT_DLQ_TOPIC,
                 max_bytes: int = MAX_RECORD_BYTES) -> None:
        self.sink = sink
        self.topic = topic
        self.max_bytes = max_bytes
        self.reasons = RateLimitedLog(log)

    def send(self, record: Record, invalid: Invalid) -> None:
        value = record.value or b""
        headers = dead_letter_headers(record, invalid)
        if len(value) > self.max_bytes:
            headers += [("dlq.truncated", b"1"), ("dlq.original_size", str(len(value)).encode())]
            value = value[:self.max_bytes]
        key = record.key if record.key is None or len(record.key) <= 1024 else record.key[:1024]
        self.sink.send(self.topic, value=value, key=key, headers=headers)
        self.reasons.note(f"dead-lettered {invalid.reason}", "latest %s[%d]@%d: %s",
                          record.topic, record.partition, record.offset, invalid.detail[:200])
