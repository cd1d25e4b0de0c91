"""Thin Kafka I/O: settings, a source (consumer group), a sink, topics.

The rest of the project sees only :class:`KafkaSettings`, :class:`Record`, :class:`Source`
and :class:`Sink`. :func:`open_source` / :func:`open_sink` pick the client by
``KafkaSettings.client``: kafka-python (:class:`KafkaSource`, :class:`KafkaSink`, the
default) or librdkafka through confluent-kafka (:mod:`stream.kafka.librdkafka`, for
throughput; the ``librdkafka`` extra). Offsets are never auto-committed: the caller commits
explicitly once the state covering them is durable (consumer-group semantics, commit after
processing).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from stream.kafka.base import (
    CLIENTS,
    MAX_RECORD_BYTES,
    SECURITY_KEYS,
    Headers,
    KafkaSettings,
    Record,
    Sink,
    Source,
)
from stream.kafka.kafka_python import KafkaSink, KafkaSource, ensure_topics

__all__ = ["CLIENTS", "LIBRDKAFKA_MISSING", "MAX_RECORD_BYTES", "SECURITY_KEYS", "Headers",
           "KafkaSettings", "KafkaSink", "KafkaSource", "LibrdkafkaMissing", "Record", "Sink",
           "Source", "ensure_topics", "open_sink", "open_source"]


class LibrdkafkaMissing(ImportError):
    """``client = "librdkafka"`` was chosen but confluent-kafka is not installed."""


LIBRDKAFKA_MISSING = ("kafka.client = 'librdkafka' needs confluent-kafka: "
                      "pip install 'drift-distill[librdkafka]'")


def _librdkafka() -> Any:
    """The librdkafka module, imported only when that client is chosen."""
    try:
        return importlib.import_module("stream.kafka.librdkafka")
    except ImportError as exc:
        if exc.name and exc.name.startswith("confluent_kafka"):
            raise LibrdkafkaMissing(LIBRDKAFKA_MISSING) from exc
        raise


def open_source(settings: KafkaSettings, topics: Iterable[str], group_id: str,
                on_assign: Callable[[list[tuple[str, int]]], None] | None = None,
                on_revoke: Callable[[list[tuple[str, int]]], None] | None = None,
                max_poll_records: int = 500, auto_offset_reset: str = "earliest") -> Source:
    """A consumer-group member on the client ``settings.client`` names."""
    cls: Any = (_librdkafka().LibrdkafkaSource if settings.client == "librdkafka"
                else KafkaSource)
    source: Source = cls(settings, topics, group_id, on_assign=on_assign, on_revoke=on_revoke,
                         max_poll_records=max_poll_records, auto_offset_reset=auto_offset_reset)
    return source


def open_sink(settings: KafkaSettings, **tuning: Any) -> Sink:
    """A producer on the client ``settings.client`` names; ``tuning`` takes kafka-python's
    producer options (``linger_ms``, ``batch_size``, ``compression_type``, ...), mapped to
    librdkafka's where they have an equivalent."""
    if settings.client == "librdkafka":
        sink: Sink = _librdkafka().LibrdkafkaSink(settings, **tuning)
        return sink
    return KafkaSink(settings, **tuning)
