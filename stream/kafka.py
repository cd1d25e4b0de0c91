"""Thin Kafka I/O: settings, a source (consumer group), a sink, topics.

The rest of the project sees only :class:`KafkaSettings`, :class:`Record`, :class:`Source`
and :class:`Sink`. :func:`open_source` / :func:`open_sink` pick the client by
``KafkaSettings.client``: kafka-python (:class:`KafkaSource`, :class:`KafkaSink`, the
default) or librdkafka through confluent-kafka (:mod:`stream.kafka_librdkafka`, for
throughput; the ``librdkafka`` extra). Offsets are never auto-committed: the caller commits
explicitly once the state covering them is durable (consumer-group semantics, commit after
processing).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from stream.exceptions import BrokerUnavailableError, CommitError, ProducerFlushError

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
CLIENTS = ("kafka-python", "librdkafka")
#: kafka-python TLS/SASL option -> librdkafka property (``security`` may use either name).
SECURITY_KEYS = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}
_KAFKA_PYTHON_KEYS = {v: k for k, v in SECURITY_KEYS.items()}


@dataclass(frozen=True)
class KafkaSettings:
    """Connection settings shared by consumers, producers and the admin client.

    ``client`` picks the library behind :func:`open_source` / :func:`open_sink`:
    ``"kafka-python"`` or ``"librdkafka"`` (confluent-kafka). ``security`` holds TLS/SASL
    options under kafka-python's names (``security_protocol``, ``sasl_mechanism``,
    ``sasl_plain_username``, ``ssl_cafile``, ...), translated for librdkafka; a dotted key is
    a librdkafka property, passed to librdkafka unchanged (and to kafka-python under its
    name when it has one, else left out there). The session/heartbeat defaults join a group
    in ~3 s; Kafka's 45 s default takes ~23 s.
    """

    bootstrap_servers: str
    client_id: str = "drift-distill"
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 2000
    request_timeout_ms: int = 30000
    security: Mapping[str, Any] = field(default_factory=dict)
    client: str = "kafka-python"

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise ValueError(f"unknown Kafka client {self.client!r}; one of {', '.join(CLIENTS)}")

    def common(self) -> dict[str, Any]:
        """kafka-python keyword arguments (also used by the admin client for either client)."""
        security: dict[str, Any] = {}
        for key, value in self.security.items():
            if "." not in key:
                security[key] = value
            elif key in _KAFKA_PYTHON_KEYS:
                security[_KAFKA_PYTHON_KEYS[key]] = value
            else:
                log.debug("librdkafka property %s has no kafka-python equivalent; skipped", key)
        return {"bootstrap_servers": self.bootstrap_servers.split(","),
                "client_id": self.client_id, **security}

    def librdkafka_security(self) -> dict[str, Any]:
        """``security`` as librdkafka properties; ValueError names a key it cannot map."""
        out: dict[str, Any] = {}
        for key, value in self.security.items():
            if "." in key:
                out[key] = value
            elif key in SECURITY_KEYS:
                out[SECURITY_KEYS[key]] = value
            else:
                raise ValueError(
                    f"kafka.security key {key!r} has no librdkafka equivalent; known: "
                    f"{', '.join(sorted(SECURITY_KEYS))}, or give a librdkafka property "
                    f"name (with dots) directly")
        return out


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, independent of the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int


class Source(Protocol):
    """A consumer-group member: :class:`KafkaSource` or ``LibrdkafkaSource``."""

    topics: list[str]
    group_id: str

    def poll(self, timeout_ms: int = 500, max_records: int | None = None) -> list[Record]: ...

    def records(self, timeout_ms: int = 500) -> Iterator[Record]: ...

    def assignment(self) -> list[tuple[str, int]]: ...

    def seek(self, topic: str, partition: int, offset: int) -> None: ...

    def committed(self, topic: str, partition: int) -> int | None: ...

    def end_offsets(self, partitions: Iterable[tuple[str, int]]
                    ) -> dict[tuple[str, int], int]: ...

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """A producer: :class:`KafkaSink` or ``LibrdkafkaSink``."""

    def send(self, topic: str, value: bytes, key: bytes | None = None,
             headers: Headers | None = None, partition: int | None = None) -> None: ...

    def flush(self, timeout: float = 30.0) -> None: ...

    def close(self) -> None: ...


class LibrdkafkaMissing(ImportError):
    """``client = "librdkafka"`` was chosen but confluent-kafka is not installed."""


LIBRDKAFKA_MISSING = ("kafka.client = 'librdkafka' needs confluent-kafka: "
                      "pip install 'drift-distill[librdkafka]'")


def _librdkafka() -> Any:
    """The librdkafka module, imported only when that client is chosen."""
    try:
        return importlib.import_module("stream.kafka_librdkafka")
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
    return cls(settings, topics, group_id, on_assign=on_assign, on_revoke=on_revoke,
               max_poll_records=max_poll_records, auto_offset_reset=auto_offset_reset)


def open_sink(settings: KafkaSettings, **tuning: Any) -> Sink:
    """A producer on the client ``settings.client`` names; ``tuning`` takes kafka-python's
    producer options (``linger_ms``, ``batch_size``, ``compression_type``, ...), mapped to
    librdkafka's where they have an equivalent."""
    if settings.client == "librdkafka":
        return _librdkafka().LibrdkafkaSink(settings, **tuning)
    return KafkaSink(settings, **tuning)


def ensure_topics(settings: KafkaSettings, topics: Mapping[str, int],
                  replication_factor: int = 1) -> None:
    """Create each topic with its partition count; existing topics are left as they are.

    Uses kafka-python's admin client whichever client ``settings`` names."""
    try:
        admin = KafkaAdminClient(**settings.common(),
                                 request_timeout_ms=settings.request_timeout_ms)
    except KafkaError as exc:
        raise BrokerUnavailableError(f"no broker at {settings.bootstrap_servers}") from exc
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, num_partitions=n, replication_factor=replication_factor)
               for name, n in topics.items() if name not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
    finally:
        admin.close()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, on_assign: Callable[[list[TopicPartition]], None] | None,
                 on_revoke: Callable[[list[TopicPartition]], None] | None) -> None:
        self._on_assign, self._on_revoke = on_assign, on_revoke

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if self._on_assign:
            self._on_assign(list(assigned))

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self._on_revoke:
            self._on_revoke(list(revoked))


class KafkaSource:
    """A consumer-group member that polls records and commits offsets only when told.

    ``on_assign`` / ``on_revoke`` receive ``(topic, partition)`` pairs; they run inside
    ``poll`` and are where per-partition state is restored (and the consumer seeks) or
    checkpointed.
    """

    def __init__(self, settings: KafkaSettings, topics: Iterable[str], group_id: str,
                 on_assign: Callable[[list[tuple[str, int]]], None] | None = None,
                 on_revoke: Callable[[list[tuple[str, int]]], None] | None = None,
                 max_poll_records: int = 500, auto_offset_reset: str = "earliest",
                 **extra: Any) -> None:
        self.topics = list(topics)
        self.group_id = group_id
        try:
            self._consumer = KafkaConsumer(
                **settings.common(), group_id=group_id, enable_auto_commit=False,
                auto_offset_reset=auto_offset_reset, max_poll_records=max_poll_records,
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=settings.heartbeat_interval_ms,
                request_timeout_ms=settings.request_timeout_ms, **extra,
            )
        except KafkaError as exc:
            raise BrokerUnavailableError(f"no broker at {settings.bootstrap_servers}") from exc

        def wrap(cb: Callable[[list[tuple[str, int]]], None] | None):
            if cb is None:
                return None
            return lambda tps: cb([(tp.topic, tp.partition) for tp in tps])

        self._consumer.subscribe(self.topics, listener=_Rebalance(wrap(on_assign),
                                                                  wrap(on_revoke)))

    def poll(self, timeout_ms: int = 500, max_records: int | None = None) -> list[Record]:
        """Fetched records of all assigned partitions, each partition in offset order."""
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Record] = []
        for tp, msgs in batches.items():
            out.extend(
                Record(tp.topic, tp.partition, m.offset, m.key, m.value,
                       [(k, v) for k, v in (m.headers or [])], m.timestamp)
                for m in msgs
            )
        return out

    def records(self, timeout_ms: int = 500) -> Iterator[Record]:
        """Poll forever; yields records (the caller breaks out)."""
        while True:
            yield from self.poll(timeout_ms)

    def assignment(self) -> list[tuple[str, int]]:
        return sorted((tp.topic, tp.partition) for tp in self._consumer.assignment())

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._consumer.seek(TopicPartition(topic, partition), offset)

    def committed(self, topic: str, partition: int) -> int | None:
        return self._consumer.committed(TopicPartition(topic, partition))

    def end_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        tps = [TopicPartition(t, p) for t, p in partitions]
        return {(tp.topic, tp.partition): off
                for tp, off in self._consumer.end_offsets(tps).items()}

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit ``next offset to read`` per partition (Kafka's convention: last + 1)."""
        if not offsets:
            return
        payload = {TopicPartition(t, p): OffsetAndMetadata(off, "", -1)
                   for (t, p), off in offsets.items()}
        try:
            self._consumer.commit(payload)
        except KafkaError as exc:
            raise CommitError(f"offset commit failed: {exc}") from exc

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class KafkaSink:
    """A producer with explicit flush; ``flush`` raises if anything was not delivered."""

    def __init__(self, settings: KafkaSettings, linger_ms: int = 5, acks: str | int = "all",
                 **extra: Any) -> None:
        try:
            self._producer = KafkaProducer(**settings.common(), linger_ms=linger_ms, acks=acks,
                                           request_timeout_ms=settings.request_timeout_ms,
                                           **extra)
        except KafkaError as exc:
            raise BrokerUnavailableError(f"no broker at {settings.bootstrap_servers}") from exc
        self._pending: list[Any] = []

    def send(self, topic: str, value: bytes, key: bytes | None = None,
             headers: Headers | None = None, partition: int | None = None) -> None:
        self._pending.append(self._producer.send(topic, value=value, key=key,
                                                 headers=headers or [], partition=partition))

    def flush(self, timeout: float = 30.0) -> None:
        self._producer.flush(timeout=timeout)
        failed = [f for f in self._pending if f.failed() or not f.is_done]
        self._pending.clear()
        if failed:
            raise ProducerFlushError(f"{len(failed)} message(s) not acknowledged")

    def close(self) -> None:
        self._producer.close(timeout=5)
