"""The librdkafka path (confluent-kafka) behind :mod:`stream.kafka`'s interface.

:class:`LibrdkafkaSource` and :class:`LibrdkafkaSink` have the public methods and the
semantics of :class:`stream.kafka.KafkaSource` / :class:`stream.kafka.KafkaSink`; pick them
with ``KafkaSettings(client="librdkafka")`` and :func:`stream.kafka.open_source` /
:func:`stream.kafka.open_sink`. Offsets are committed only when told (no auto commit, no
auto offset store). Rebalance callbacks run inside :meth:`LibrdkafkaSource.poll`, as
confluent-kafka serves them from ``consume()``; a :meth:`~LibrdkafkaSource.seek` issued from
``on_assign`` becomes the partition's start offset in the ``assign()`` that follows the
callback (librdkafka cannot seek a partition that is not assigned yet).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import KafkaError as RdKafkaError

from stream.exceptions import (
    BrokerUnavailableError,
    CommitError,
    FatalClientError,
    ProducerFlushError,
    StreamError,
)
from stream.kafka.base import Headers, KafkaSettings, Record

log = logging.getLogger(__name__)
#: What a sink keeps of a message to send it again: topic, value, key, headers, partition.
_Message = tuple[str, bytes, bytes | None, Headers | None, int | None]

#: Seconds the constructors wait for the broker's metadata before BrokerUnavailableError
#: (kafka-python's constructors fail after their ~2 s API-version probe).
CONNECT_TIMEOUT_S = 10.0

#: kafka-python producer option -> librdkafka property, for the tuning options in use.
PRODUCER_OPTIONS = {
    "batch_size": "batch.size",
    "compression_type": "compression.type",
    "max_request_size": "message.max.bytes",
    "retries": "retries",
    "retry_backoff_ms": "retry.backoff.ms",
    "max_in_flight_requests_per_connection": "max.in.flight.requests.per.connection",
    "enable_idempotence": "enable.idempotence",
    "delivery_timeout_ms": "message.timeout.ms",
}
#: kafka-python producer options with no librdkafka counterpart worth mapping: accepted, ignored.
IGNORED_PRODUCER_OPTIONS = frozenset({"buffer_memory", "max_block_ms", "api_version",
                                      "metadata_max_age_ms", "send_buffer_bytes",
                                      "receive_buffer_bytes"})


class ConsumeError(StreamError):
    """librdkafka reported a consumer error that retrying the poll will not hide."""


def base_config(settings: KafkaSettings) -> dict[str, Any]:
    """Properties shared by the consumer and the producer (``security`` translated)."""
    return {"bootstrap.servers": settings.bootstrap_servers,
            "client.id": settings.client_id,
            "socket.timeout.ms": settings.request_timeout_ms,
            "logger": log,
            **settings.librdkafka_security()}


def _check_reachable(client: Consumer | Producer, settings: KafkaSettings) -> None:
    """A metadata round trip, so an unreachable broker fails here as with kafka-python."""
    timeout = min(CONNECT_TIMEOUT_S, settings.request_timeout_ms / 1000)
    try:
        client.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"no broker at {settings.bootstrap_servers}: "
                                     f"{exc.args[0] if exc.args else exc}") from exc


def _pairs(partitions: Iterable[TopicPartition]) -> list[tuple[str, int]]:
    return [(tp.topic, tp.partition) for tp in partitions]


class LibrdkafkaSource:
    """A consumer-group member that polls records and commits offsets only when told.

    ``on_assign`` / ``on_revoke`` receive ``(topic, partition)`` pairs; they run inside
    ``poll``. ``close`` leaves the group without committing and without calling them.
    """

    def __init__(self, settings: KafkaSettings, topics: Iterable[str], group_id: str,
                 on_assign: Callable[[list[tuple[str, int]]], None] | None = None,
                 on_revoke: Callable[[list[tuple[str, int]]], None] | None = None,
                 max_poll_records: int = 500, auto_offset_reset: str = "earliest",
                 **extra: Any) -> None:
        self.topics = list(topics)
        self.group_id = group_id
        self.max_poll_records = max_poll_records
        self._timeout_s = settings.request_timeout_ms / 1000
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._assigning: list[tuple[str, int]] | None = None  # inside on_assign
        self._seeks: dict[tuple[str, int], int] = {}  # seeks issued inside on_assign
        self._closing = False
        self._error: StreamError | None = None  # raised by the next poll
        conf = {**base_config(settings), "group.id": group_id,
                "enable.auto.commit": False, "enable.auto.offset.store": False,
                "enable.partition.eof": False, "auto.offset.reset": auto_offset_reset,
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": settings.heartbeat_interval_ms,
                # the prefetch queue (all partitions) is memory the service holds: 64 MiB by
                # default, 16 MiB keeps up with serve (7,000 events of 2.3 KB)
                "queued.max.messages.kbytes": 16_384,
                "error_cb": self._on_error, **extra}
        try:
            self._consumer = Consumer(conf)
        except KafkaException as exc:
            raise ValueError(f"librdkafka consumer configuration: {exc}") from exc
        try:
            _check_reachable(self._consumer, settings)
        except BrokerUnavailableError:
            self._consumer.close()
            raise
        self._consumer.subscribe(self.topics, on_assign=self._assigned,
                                 on_revoke=self._revoked, on_lost=self._revoked)

    # -- callbacks (run inside consume()) -------------------------------------------------

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        pairs = _pairs(partitions)
        self._assigning, self._seeks = pairs, {}
        try:
            if self._on_assign and not self._closing:
                self._on_assign(list(pairs))
        finally:
            seeks, self._assigning, self._seeks = self._seeks, None, {}
            # start each partition where the callback sought it, else at the committed offset
            consumer.assign([TopicPartition(t, p, seeks.get((t, p), OFFSET_INVALID))
                             for t, p in pairs])

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            if self._on_revoke and not self._closing:
                self._on_revoke(_pairs(partitions))
        finally:
            consumer.unassign()

    def _on_error(self, err: RdKafkaError) -> None:
        if err.fatal():
            self._error = FatalClientError(f"fatal consumer error: {err.str()}")
        else:  # transport errors and the like: librdkafka retries them itself
            log.warning("librdkafka consumer: %s", err.str())

    # -- the Source interface -------------------------------------------------------------

    def poll(self, timeout_ms: int = 500, max_records: int | None = None) -> list[Record]:
        """Fetched records of all assigned partitions, each partition in offset order.

        An error librdkafka reports alongside records is raised by the next call, so the
        records already taken off its queue are never lost to the caller."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        try:
            msgs = self._consumer.consume(num_messages=max_records or self.max_poll_records,
                                          timeout=timeout_ms / 1000)
        except KafkaException as exc:
            raise ConsumeError(f"consume failed: {exc}") from exc
        out: list[Record] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == RdKafkaError._PARTITION_EOF:
                    continue
                if err.fatal() or not err.retriable():
                    kind = FatalClientError if err.fatal() else ConsumeError
                    self._error = self._error or kind(
                        f"{m.topic()}[{m.partition()}]: {err.str()}")
                else:
                    log.warning("librdkafka consumer: %s", err.str())
                continue
            ts_type, ts = m.timestamp()
            # a consumed message always has a topic, partition and offset; headers are bytes
            out.append(Record(m.topic(), m.partition(), m.offset(),  # type: ignore[arg-type]
                              m.key(), m.value(), list(m.headers() or ()),  # type: ignore[arg-type]
                              -1 if ts_type == TIMESTAMP_NOT_AVAILABLE else ts))
        if not out and self._error is not None:
            error, self._error = self._error, None
            raise error
        return out

    def records(self, timeout_ms: int = 500) -> Iterator[Record]:
        """Poll forever; yields records (the caller breaks out)."""
        while True:
            yield from self.poll(timeout_ms)

    def assignment(self) -> list[tuple[str, int]]:
        if self._assigning is not None:  # inside on_assign, as kafka-python reports it
            return sorted(self._assigning)
        return sorted(_pairs(self._consumer.assignment()))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Consume ``topic[partition]`` from ``offset`` next; from inside ``on_assign`` the
        offset becomes the partition's start offset."""
        if self._assigning is not None and (topic, partition) in self._assigning:
            self._seeks[(topic, partition)] = offset
            return
        try:
            self._consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            raise ConsumeError(f"seek {topic}[{partition}] to {offset}: {exc}") from exc

    def committed(self, topic: str, partition: int) -> int | None:
        try:
            [tp] = self._consumer.committed([TopicPartition(topic, partition)],
                                            timeout=self._timeout_s)
        except KafkaException as exc:
            raise ConsumeError(f"committed offset of {topic}[{partition}]: {exc}") from exc
        return None if tp.offset < 0 else tp.offset

    def end_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for t, p in partitions:
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(t, p),
                                                               timeout=self._timeout_s)
            except KafkaException as exc:
                raise ConsumeError(f"end offset of {t}[{p}]: {exc}") from exc
            out[(t, p)] = high
        return out

    def log_bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """(first offset still in the log, next offset to be written)."""
        try:
            return self._consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                        timeout=self._timeout_s)
        except KafkaException as exc:
            raise ConsumeError(f"log bounds of {topic}[{partition}]: {exc}") from exc

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit ``next offset to read`` per partition (Kafka's convention: last + 1),
        synchronously; CommitError if the group rejects any of it."""
        if not offsets:
            return
        tps = [TopicPartition(t, p, off) for (t, p), off in offsets.items()]
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise CommitError(f"offset commit failed: {exc}") from exc
        failed = [f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in result or ()
                  if tp.error is not None]
        if failed:
            raise CommitError(f"offset commit failed: {'; '.join(failed)}")

    def close(self) -> None:
        """Leave the group; nothing is committed and no rebalance callback runs."""
        self._closing = True
        self._consumer.close()


class LibrdkafkaSink:
    """A producer with explicit flush; ``flush`` raises if anything was not delivered.

    Takes kafka-python's producer options (see :data:`PRODUCER_OPTIONS`). Nothing is
    dropped: a message whose delivery failed (or that librdkafka refused outright) is kept
    and produced again by the next ``flush``, which raises until every message so far was
    acknowledged. A fatal producer error raises :class:`FatalClientError` from the next
    ``send`` or ``flush``: that producer cannot recover, so serve exits for its supervisor."""

    def __init__(self, settings: KafkaSettings, linger_ms: int = 5, acks: str | int = "all",
                 **extra: Any) -> None:
        conf = {**base_config(settings), "acks": acks, "linger.ms": linger_ms,
                "request.timeout.ms": settings.request_timeout_ms, "error_cb": self._on_error}
        for key, value in extra.items():
            if key in PRODUCER_OPTIONS:
                conf[PRODUCER_OPTIONS[key]] = value
            elif "." in key:  # a librdkafka property
                conf[key] = value
            elif key not in IGNORED_PRODUCER_OPTIONS:
                raise TypeError(f"producer option {key!r} has no librdkafka equivalent")
        try:
            self._producer = Producer(conf)
        except KafkaException as exc:
            raise ValueError(f"librdkafka producer configuration: {exc}") from exc
        _check_reachable(self._producer, settings)
        self._retry: list[_Message] = []
        self._errors: list[str] = []
        self._fatal: FatalClientError | None = None

    def _on_error(self, err: RdKafkaError) -> None:
        if err.fatal():
            self._fatal = FatalClientError(f"fatal producer error: {err.str()}")
        else:
            log.warning("librdkafka producer: %s", err.str())

    def _failed(self, msg: _Message, error: str) -> None:
        self._retry.append(msg)
        if len(self._errors) < 5:
            self._errors.append(error)

    def send(self, topic: str, value: bytes, key: bytes | None = None,
             headers: Headers | None = None, partition: int | None = None) -> None:
        if self._fatal is not None:
            raise self._fatal
        msg = (topic, value, key, headers, partition)

        def delivered(err: RdKafkaError | None, _: Any) -> None:
            if err is not None:
                self._failed(msg, err.str())

        kwargs: dict[str, Any] = {"value": value, "key": key, "on_delivery": delivered}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:  # the local queue is full: serve deliveries and retry
                self._producer.poll(0.1)
            except KafkaException as exc:  # refused outright (e.g. unknown partition)
                self._failed(msg, str(exc))
                break
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        if self._fatal is not None:
            raise self._fatal
        retry, self._retry = self._retry, []
        for msg in retry:
            self.send(*msg)
        deadline = time.monotonic() + timeout
        remaining = self._producer.flush(timeout)
        while remaining and time.monotonic() < deadline:  # flush may return early
            remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        failed, errors = len(self._retry) + remaining, self._errors
        self._errors = []
        if failed:
            detail = f" ({'; '.join(errors)})" if errors else ""
            raise ProducerFlushError(f"{failed} message(s) not acknowledged; the refused ones "
                                     f"are sent again on the next flush{detail}")

    def close(self) -> None:
        self._producer.flush(5)

