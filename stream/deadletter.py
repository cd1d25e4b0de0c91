"""Dead-letter routing: a rejected message keeps its original bytes and gains its reason.

Headers carry the reason and where the message came from, so an operator can find and
replay it: ``dlq.reason``, ``dlq.detail``, ``dlq.topic``, ``dlq.partition``, ``dlq.offset``.
"""

from __future__ import annotations

from stream.events import Invalid
from stream.kafka import Headers, Record, Sink

DEFAULT_DLQ_TOPIC = "teacher-outputs.dlq"


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

    def __init__(self, sink: Sink, topic: str = DEFAULT_DLQ_TOPIC) -> None:
        self.sink = sink
        self.topic = topic

    def send(self, record: Record, invalid: Invalid) -> None:
        self.sink.send(self.topic, value=record.value or b"", key=record.key,
                       headers=dead_letter_headers(record, invalid))
