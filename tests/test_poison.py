"""No single message stops serve: a poison corpus under both Kafka clients.

Each poison message is dead-lettered once with its reason, every valid event around them is
counted, and the loop runs to its idle exit. A record whose processing raises unexpectedly
(simulated by a pipeline that fails on one event) is dead-lettered as
``internal_error:<type>`` and the records after it are processed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serving import Topics, read_topic, run_in_thread, status_json

from distill.monitor.ingest import IngestOutput, IngestStage
from stream.deadletter import header_dict
from stream.events import TeacherEvent, format_timestamp
from stream.kafka import MAX_RECORD_BYTES, KafkaSettings, KafkaSink, ensure_topics
from stream.simulator import generate, load_scenario

BOOM = "boom-event"


def _event(**changes: object) -> dict:
    doc = {"event_id": "p", "sample_id": "poison", "teacher": "t", "output": "Final answer: 1",
           "produced_at": "2026-01-01T00:00:00Z"}
    doc.update(changes)
    return doc


def _js(doc: object) -> bytes:
    return json.dumps(doc).encode()


def poison_corpus() -> list[tuple[bytes | None, str]]:
    """(value, expected dead-letter reason)."""
    deep = "[" * 5000 + "]" * 5000
    return [
        (_js(_event(output="x" * (3 << 19))), "too_large"),  # 1.5 MiB
        (_js(_event(produced_at="9999-12-31T23:59:59-14:00")), "bad_timestamp"),
        (_js(_event(produced_at="0001-01-01T00:00:00+14:00")), "bad_timestamp"),
        (_js(_event(produced_at="0000-01-01T00:00:00Z")), "bad_timestamp"),
        (b'{"event_id": "p", "meta": ' + deep.encode() + b"}", "not_json"),
        (b'{"event_id": "p", "ground_truth": 1' + b"0" * 400 + b"}", "not_json"),
        (b'{"event_id": "p", "ground_truth": 1e999}', "not_json"),
        (b'{"event_id": "\xff\xfe", "teacher": "t"}', "not_json"),
        (b'{"event_id": "a\x00\x01b"}', "not_json"),
        (b"\xef\xbb\xbf" + _js(_event()), "not_json"),
        (b"", "not_json"),
        (b"NaN", "not_json"),
        (None, "empty"),
        (_js([_event()]), "not_object"),
        (_js(_event(teacher=7)), "bad_type:teacher"),
        (_js(_event(teacher=["a", "b"])), "bad_type:teacher"),
        (_js(_event(teacher={"name": "a"})), "bad_type:teacher"),
        (_js(_event(teacher="   ")), "bad_value:teacher"),
        (_js(_event(event_id="e" * 513)), "bad_value:event_id"),
        (_js(_event(labels=["a"])), "bad_type:labels"),
        (_js(_event(output=None)), "missing_field:output"),
        (_js(_event(event_id=BOOM, sample_id="boom")), "internal_error:RuntimeError"),
    ]


def _weird_but_valid(stamp: str) -> list[bytes]:
    """Valid events that once stalled or could break the loop: counted, not dead-lettered."""
    return [_js(_event(event_id="w1", sample_id="w1", output=" " * 200_000 + "x",
                       produced_at=stamp)),
            _js(_event(event_id="w2", sample_id="w2", teacher='t\n"x\\ \u2028',
                       output="answer is" + " " * 100_000 + "!", produced_at=stamp))]


@pytest.mark.broker
@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_poison_corpus_is_dead_lettered_and_every_valid_event_counted(
        kafka_settings: KafkaSettings, tmp_path: Path, client: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if client == "librdkafka":
        pytest.importorskip("confluent_kafka")
    process = IngestStage.process  # what serve calls per record

    def failing(self: IngestStage, event: TeacherEvent, offset: int = -1,
                now: float | None = None) -> IngestOutput:
        if event.event_id == BOOM:
            raise RuntimeError("simulated bug")
        return process(self, event, offset, now)

    monkeypatch.setattr(IngestStage, "process", failing)
    events = list(generate(load_scenario("default").with_samples(20), seed=1))
    corpus = poison_corpus()
    stamp = format_timestamp(events[-1].produced_at)  # within the stream's lateness
    valid = [e.to_json_bytes() for e in events] + _weird_but_valid(stamp)
    stream: list[tuple[bytes | None, bool]] = [(v, True) for v in valid]
    for i, (value, _) in enumerate(corpus):  # spread the poison through the stream
        stream.insert(1 + i * len(stream) // len(corpus), (value, False))
    topics = Topics.fresh()
    ensure_topics(kafka_settings, {topics.input: 1})
    sink = KafkaSink(kafka_settings, max_request_size=4 << 20)
    for value, _ in stream:
        sink.send(topics.input, value, key=b"k")  # type: ignore[arg-type]
    sink.flush()
    sink.close()

    cfg = topics.config(kafka_settings.bootstrap_servers, tmp_path)
    cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"client": client})})
    summary = run_in_thread(cfg)

    assert summary.records == len(stream)
    dead = read_topic(kafka_settings, topics.dlq, len(corpus), timeout=60)
    got = sorted(header_dict(r.headers)["dlq.reason"] for r in dead)
    assert got == sorted(reason for _, reason in corpus)
    big = next(r for r in dead if header_dict(r.headers)["dlq.reason"] == "too_large")
    assert header_dict(big.headers)["dlq.original_size"] == str(len(corpus[0][0] or b""))
    assert len(big.value or b"") == MAX_RECORD_BYTES
    status = status_json(tmp_path)
    assert sum(t["events"] for t in status["teachers"].values()) == len(valid)
    [checkpoint] = [c for c in status["checkpoints"] if c["topic"] == topics.input]
    assert checkpoint["offset"] == len(stream)
