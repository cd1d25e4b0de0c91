"""The kafka-python path: :class:`KafkaSource` and :class:`KafkaSink` (the default client)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from stream.exceptions import BrokerUnavailableError, CommitError, ProducerFlushError
from stream.kafka.base import Headers, KafkaSettings, Record

log = logging.getLogger(__name__)


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


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped library
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

        def wrap(cb: Callable[[list[tuple[str, int]]], None] | None,
                 ) -> Callable[[list[TopicPartition]], None] | None:
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
        offset: int | None = self._consumer.committed(TopicPartition(topic, partition))
        return offset

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
