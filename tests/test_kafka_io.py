"""Kafka I/O through a real broker: produce, consume, commit, resume, dead-letter."""

from __future__ import annotations

import time

from stream.deadletter import DeadLetterSink, header_dict
from stream.events import decode_event
from stream.kafka import KafkaSettings, KafkaSink, KafkaSource, Record, ensure_topics


def drain(source: KafkaSource, want: int, timeout: float = 30.0) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(source.poll(timeout_ms=200))
    return got


def produce(settings: KafkaSettings, topic: str, values: list[bytes]) -> None:
    sink = KafkaSink(settings)
    for v in values:
        sink.send(topic, v, partition=0)
    sink.flush()
    sink.close()


def test_consumer_resumes_after_last_commit(kafka_settings: KafkaSettings, topic: str) -> None:
    ensure_topics(kafka_settings, {topic: 1})
    produce(kafka_settings, topic, [f"m{i}".encode() for i in range(10)])

    first = KafkaSource(kafka_settings, [topic], group_id=f"{topic}-g")
    got = drain(first, 10)
    assert [r.value for r in got] == [f"m{i}".encode() for i in range(10)]
    first.commit({(topic, 0): got[5].offset + 1})  # processed m0..m5 only
    first.close()

    second = KafkaSource(kafka_settings, [topic], group_id=f"{topic}-g")
    rest = drain(second, 4)
    second.close()
    assert [r.value for r in rest] == [b"m6", b"m7", b"m8", b"m9"]


def test_uncommitted_offsets_are_redelivered(kafka_settings: KafkaSettings, topic: str) -> None:
    ensure_topics(kafka_settings, {topic: 1})
    produce(kafka_settings, topic, [b"a", b"b"])
    first = KafkaSource(kafka_settings, [topic], group_id=f"{topic}-g")
    assert len(drain(first, 2)) == 2
    first.close()  # no commit: a crash before the checkpoint
    second = KafkaSource(kafka_settings, [topic], group_id=f"{topic}-g")
    assert [r.value for r in drain(second, 2)] == [b"a", b"b"]
    second.close()


def test_topics_are_created_with_partition_count(kafka_settings: KafkaSettings,
                                                 topic: str) -> None:
    ensure_topics(kafka_settings, {topic: 3})
    ensure_topics(kafka_settings, {topic: 3})  # idempotent
    source = KafkaSource(kafka_settings, [topic], group_id=f"{topic}-g")
    parts = source._consumer.partitions_for_topic(topic)
    source.close()
    assert parts == {0, 1, 2}


BAD_MESSAGES = {
    b"not json at all": "not_json",
    b"[1, 2]": "not_object",
    b'{"sample_id": "s", "teacher": "t", "output": "o", "produced_at": "2026-01-01T00:00:00Z"}':
        "missing_field:event_id",
    b'{"event_id": 5, "sample_id": "s", "teacher": "t", "output": "o",'
    b' "produced_at": "2026-01-01T00:00:00Z"}': "bad_type:event_id",
    b'{"event_id": "e", "sample_id": "s", "teacher": "t", "output": "o",'
    b' "produced_at": "yesterday"}': "bad_timestamp",
    b'{"event_id": "e", "sample_id": "s", "teacher": "t", "output": "' + b"x" * 2000 + b'",'
    b' "produced_at": "2026-01-01T00:00:00Z"}': "too_large",
    b"\xff\xfe\x00garbage": "not_json",
}


def test_dead_letter_topic_receives_every_bad_message_with_reason(
        kafka_settings: KafkaSettings, topic: str) -> None:
    dlq_topic = f"{topic}.dlq"
    ensure_topics(kafka_settings, {topic: 1, dlq_topic: 1})
    produce(kafka_settings, topic, list(BAD_MESSAGES))

    source = KafkaSource(kafka_settings, [topic], group_id=f"{topic}-g")
    sink = KafkaSink(kafka_settings)
    dlq = DeadLetterSink(sink, dlq_topic)
    records = drain(source, len(BAD_MESSAGES))
    for record in records:
        decoded = decode_event(record.value, max_bytes=1024)
        assert not decoded
        dlq.send(record, decoded)
    sink.flush()
    source.commit({(topic, 0): records[-1].offset + 1})
    source.close()

    reader = KafkaSource(kafka_settings, [dlq_topic], group_id=f"{topic}-dlq-reader")
    dead = drain(reader, len(BAD_MESSAGES))
    reader.close()
    assert len(dead) == len(BAD_MESSAGES)
    for record in dead:
        headers = header_dict(record.headers)
        assert headers["dlq.reason"] == BAD_MESSAGES[record.value]
        assert headers["dlq.topic"] == topic
        assert headers["dlq.partition"] == "0"
        assert int(headers["dlq.offset"]) == list(BAD_MESSAGES).index(record.value)
