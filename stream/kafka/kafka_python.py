"""The kafka-python path: :class:`KafkaSource` and :class:`KafkaSink` (the default client)."""

from __future__ import annotations

import contextlib
import logging
import time
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
#: What a sink keeps of a message to send it again: topic, value, key, headers, partition.
_Message = tuple[str, bytes, bytes | None, Headers | None, int | None]


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

    def log_bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """(first offset still in the log, next offset to be written): where a checkpointed
        offset must lie; BrokerUnavailableError when the broker does not say."""
        tp = TopicPartition(topic, partition)
        try:
            low = self._consumer.beginning_offsets([tp])[tp]
            high = self._consumer.end_offsets([tp])[tp]
        except KafkaError as exc:
            raise BrokerUnavailableError(f"log bounds of {topic}[{partition}]: {exc}") from exc
        return low, high

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
    """A producer with explicit flush; ``flush`` raises if anything was not delivered.

    Nothing is dropped: a message the broker refused or that timed out is kept and sent
    again by the next ``flush``, which raises :class:`ProducerFlushError` until every
    message sent so far was acknowledged (the checkpoint commits only after it returns).
    After a failed delivery or a flush that timed out the producer is replaced by a new one
    that sends the kept messages: kafka-python's producer (3.0) never delivers again after
    its requests timed out against a stalled broker, while a new one does at once.
    """

    def __init__(self, settings: KafkaSettings, linger_ms: int = 5, acks: str | int = "all",
                 **extra: Any) -> None:
        self._config = {**settings.common(), "linger_ms": linger_ms, "acks": acks,
                        "request_timeout_ms": settings.request_timeout_ms, **extra}
        self._servers = settings.bootstrap_servers
        self._producer = self._new_producer()
        self._pending: list[tuple[Any, _Message]] = []
        self._retry: list[_Message] = []
        self.replaced = 0  # producers replaced after failures

    def _new_producer(self) -> KafkaProducer:
        try:
            return KafkaProducer(**self._config)
        except KafkaError as exc:
            raise BrokerUnavailableError(f"no broker at {self._servers}") from exc

    def send(self, topic: str, value: bytes, key: bytes | None = None,
             headers: Headers | None = None, partition: int | None = None) -> None:
        msg = (topic, value, key, headers, partition)
        self._pending.append((self._producer.send(topic, value=value, key=key,
                                                  headers=headers or [], partition=partition),
                              msg))

    def flush(self, timeout: float = 30.0) -> None:
        self._resend()
        deadline = time.monotonic() + timeout
        while True:  # in slices, to stop waiting at the first failed delivery
            with contextlib.suppress(KafkaError):  # a timeout: the undone are counted below
                self._producer.flush(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
            done = [future.is_done for future, _ in self._pending]
            if all(done) or time.monotonic() >= deadline or any(
                    future.failed() for future, _ in self._pending if future.is_done):
                break
        waiting: list[tuple[Any, _Message]] = []
        for future, msg in self._pending:
            if not future.is_done:
                waiting.append((future, msg))
            elif future.failed():
                self._retry.append(msg)
        self._pending = waiting
        if self._retry or waiting:
            refused = len(self._retry)
            self._replace_producer()
            raise ProducerFlushError(
                f"{refused + len(waiting)} message(s) not acknowledged ({refused} refused); "
                f"all are sent again by a new producer on the next flush")

    def _replace_producer(self) -> None:
        """Abandon the producer (its undelivered messages are kept) for a new one."""
        self._retry.extend(msg for _, msg in self._pending)
        self._pending = []
        old, self._producer = self._producer, self._new_producer()
        with contextlib.suppress(Exception):
            old.close(timeout=0)
        self.replaced += 1
        log.warning("kafka-python producer replaced after failed deliveries; %d message(s) "
                    "to send again", len(self._retry))

    def _resend(self) -> None:
        retry, self._retry = self._retry, []
        for i, msg in enumerate(retry):
            try:
                self.send(*msg)
            except BaseException:
                self._retry.extend(retry[i:])  # kept for the flush after this one
                raise

    def close(self) -> None:
        self._producer.close(timeout=5)

