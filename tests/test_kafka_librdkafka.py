"""The librdkafka path (confluent-kafka) behind stream.kafka's interface, on the real broker:
the same consume / commit / seek / rebalance semantics as kafka-python, and `distill serve`
ending in the same state with either client."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from serving import Topics, produce_events, status_json

from distill.config import Config, load_config
from distill.monitor.service import MonitorService, RunLimits
from stream.broker import free_port
from stream.exceptions import BrokerUnavailableError, FatalClientError, ProducerFlushError
from stream.kafka import (
    KafkaSettings,
    KafkaSink,
    KafkaSource,
    LibrdkafkaMissing,
    Record,
    Source,
    ensure_topics,
    open_sink,
    open_source,
)
from stream.kafka.librdkafka import LibrdkafkaSink, LibrdkafkaSource, base_config
from stream.simulator import generate, load_scenario


@pytest.fixture()
def rd_settings(kafka_settings: KafkaSettings) -> KafkaSettings:
    return dataclasses.replace(kafka_settings, client="librdkafka")


def drain(source: Source, want: int, timeout: float = 30.0) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(source.poll(timeout_ms=200))
    return got


def produce(settings: KafkaSettings, topic: str, values: list[bytes], partition: int = 0,
            **kw: object) -> None:
    sink = open_sink(settings)
    for v in values:
        sink.send(topic, v, partition=partition, **kw)  # type: ignore[arg-type]
    sink.flush()
    sink.close()


# -- selection and configuration (no broker) --------------------------------------------


def test_settings_reject_an_unknown_client() -> None:
    with pytest.raises(ValueError, match="confluent"):
        KafkaSettings("x:9092", client="confluent")


def test_security_keys_are_translated_for_librdkafka() -> None:
    settings = KafkaSettings("a:9092,b:9092", client="librdkafka", client_id="me", security={
        "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u", "sasl_plain_password": "p", "ssl_cafile": "/ca.pem",
        "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem",
        "ssl.endpoint.identification.algorithm": "none"})
    conf = base_config(settings)
    assert conf["bootstrap.servers"] == "a:9092,b:9092" and conf["client.id"] == "me"
    assert {k: v for k, v in conf.items() if k.split(".")[0] in ("security", "sasl", "ssl")} == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u",
        "sasl.password": "p", "ssl.ca.location": "/ca.pem",
        "ssl.certificate.location": "/c.pem", "ssl.key.location": "/k.pem",
        "ssl.endpoint.identification.algorithm": "none"}
    # kafka-python (the admin client, the probe) gets its own names; a librdkafka-only
    # property is left out there
    common = settings.common()
    assert common["sasl_plain_username"] == "u" and common["ssl_cafile"] == "/ca.pem"
    assert not any("." in k for k in common)


def test_unknown_security_key_is_named() -> None:
    settings = KafkaSettings("a:9092", client="librdkafka", security={"ssl_crlfile": "/x"})
    with pytest.raises(ValueError, match="ssl_crlfile"):
        base_config(settings)


def test_missing_confluent_kafka_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import fails
    monkeypatch.delitem(sys.modules, "stream.kafka.librdkafka")
    with pytest.raises(LibrdkafkaMissing, match=r"drift-distill\[librdkafka\]"):
        open_sink(KafkaSettings("127.0.0.1:1", client="librdkafka"))


def test_unreachable_broker_fails_at_construction_without_hanging() -> None:
    settings = KafkaSettings(f"127.0.0.1:{free_port()}", client="librdkafka",
                             request_timeout_ms=1000)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError):
        open_source(settings, ["t"], "g")
    with pytest.raises(BrokerUnavailableError):
        open_sink(settings)
    assert time.monotonic() - started < 10


# -- the source and the sink on the broker --------------------------------------------------


def test_factories_pick_the_client(kafka_settings: KafkaSettings, rd_settings: KafkaSettings,
                                   topic: str) -> None:
    ensure_topics(rd_settings, {topic: 1})  # kafka-python's admin serves both clients
    for settings, source_cls, sink_cls in ((kafka_settings, KafkaSource, KafkaSink),
                                           (rd_settings, LibrdkafkaSource, LibrdkafkaSink)):
        source, sink = open_source(settings, [topic], f"{topic}-g"), open_sink(settings)
        assert type(source) is source_cls and type(sink) is sink_cls
        source.close()
        sink.close()


def test_consumer_resumes_after_last_commit_and_close_commits_nothing(
        rd_settings: KafkaSettings, topic: str) -> None:
    ensure_topics(rd_settings, {topic: 1})
    produce(rd_settings, topic, [f"m{i}".encode() for i in range(10)])

    first = open_source(rd_settings, [topic], group_id=f"{topic}-g")
    got = drain(first, 10)
    assert [r.value for r in got] == [f"m{i}".encode() for i in range(10)]
    assert [r.offset for r in got] == list(range(10))
    assert first.committed(topic, 0) is None  # nothing committed until told
    first.commit({(topic, 0): got[5].offset + 1})  # processed m0..m5 only
    assert first.committed(topic, 0) == 6
    first.close()  # must not commit the 4 records it polled after m5

    second = open_source(rd_settings, [topic], group_id=f"{topic}-g")
    rest = drain(second, 4)
    assert [r.value for r in rest] == [b"m6", b"m7", b"m8", b"m9"]
    assert second.poll(timeout_ms=500) == []
    second.close()


def test_seek_inside_on_assign_takes_effect(rd_settings: KafkaSettings, topic: str) -> None:
    ensure_topics(rd_settings, {topic: 2})
    produce(rd_settings, topic, [f"a{i}".encode() for i in range(10)], partition=0)
    produce(rd_settings, topic, [f"b{i}".encode() for i in range(10)], partition=1)
    group = f"{topic}-g"
    setup = Consumer({"bootstrap.servers": rd_settings.bootstrap_servers, "group.id": group})
    # committed offsets (a standalone commit, no group join) that the seek must override
    setup.commit(offsets=[TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 4)],
                 asynchronous=False)
    setup.close()

    calls: list[list[tuple[str, int]]] = []
    source: LibrdkafkaSource

    def on_assign(parts: list[tuple[str, int]]) -> None:
        calls.append(parts)
        assert source.assignment() == sorted(parts)
        source.seek(topic, 0, 7)  # partition 1 keeps its committed offset

    source = open_source(rd_settings, [topic], group, on_assign=on_assign)  # type: ignore[assignment]
    got = drain(source, 9)
    assert calls == [[(topic, 0), (topic, 1)]]
    by_part = {p: [r.offset for r in got if r.partition == p] for p in (0, 1)}
    assert by_part == {0: [7, 8, 9], 1: [4, 5, 6, 7, 8, 9]}
    assert source.assignment() == [(topic, 0), (topic, 1)]

    source.seek(topic, 1, 1)  # outside the callback: an ordinary seek
    again = drain(source, 9)
    assert [r.offset for r in again] == list(range(1, 10))
    # as kafka-python reports them (Tansu answers base offset + 1 of the last batch, not 10)
    reference = open_source(dataclasses.replace(rd_settings, client="kafka-python"), [topic],
                            f"{topic}-ref")
    both = [(topic, 0), (topic, 1)]
    assert source.end_offsets(both) == reference.end_offsets(both)
    reference.close()
    source.close()


def test_records_match_kafka_python_field_for_field(kafka_settings: KafkaSettings,
                                                    rd_settings: KafkaSettings,
                                                    topic: str) -> None:
    """Keys, values (a null one too), headers and timestamps round-trip, and both clients
    read the same Records (each producer's messages are read back by the other client)."""
    ensure_topics(kafka_settings, {topic: 1})
    headers = [("dlq.reason", b"not_json"), ("empty", b""), ("bin", b"\x00\xff")]
    for settings in (rd_settings, kafka_settings):
        sink = open_sink(settings)
        sink.send(topic, b"v1", key=b"k1", headers=headers, partition=0)
        sink.send(topic, b"v2", partition=0)
        sink.flush()
        sink.close()
    reads = []
    for settings in (kafka_settings, rd_settings):
        source = open_source(settings, [topic], f"{topic}-{settings.client}")
        reads.append(drain(source, 4))
        source.close()
    kp, rd = reads
    assert rd == kp and len(rd) == 4
    assert [(r.key, r.value, r.headers) for r in rd] == [
        (b"k1", b"v1", headers), (None, b"v2", []), (b"k1", b"v1", headers), (None, b"v2", [])]
    now_ms = time.time() * 1000
    assert all(now_ms - 120_000 < r.timestamp_ms <= now_ms + 1000 for r in rd)


def test_rebalance_callbacks_run_inside_poll_with_pairs(rd_settings: KafkaSettings,
                                                        topic: str) -> None:
    ensure_topics(rd_settings, {topic: 2})
    group = f"{topic}-g"
    events: dict[str, list[tuple[str, list[tuple[str, int]]]]] = {"a": [], "b": []}
    polling = threading.local()

    def recorder(name: str, kind: str):
        def cb(parts: list[tuple[str, int]]) -> None:
            assert getattr(polling, "name", None) == name, "callback outside poll"
            events[name].append((kind, sorted(parts)))
        return cb

    a = open_source(rd_settings, [topic], group, on_assign=recorder("a", "assign"),
                    on_revoke=recorder("a", "revoke"))
    b = None
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        for name, src in (("a", a), ("b", b)):
            if src is not None:
                polling.name = name
                src.poll(timeout_ms=100)
                polling.name = None
        if b is None and a.assignment() == [(topic, 0), (topic, 1)]:
            b = open_source(rd_settings, [topic], group, on_assign=recorder("b", "assign"),
                            on_revoke=recorder("b", "revoke"))
        if b is not None and len(a.assignment()) == 1 and len(b.assignment()) == 1:
            break
    both = [(topic, 0), (topic, 1)]
    assert events["a"][0] == ("assign", both)
    assert ("revoke", both) in events["a"]  # eager protocol: all of it, then the new share
    assert b is not None and sorted(a.assignment() + b.assignment()) == both
    assert events["a"][-1] == ("assign", a.assignment())
    assert events["b"] == [("assign", b.assignment())]
    seen = len(events["a"])
    a.close()  # leaving the group runs no callback of ours
    assert len(events["a"]) == seen
    b.close()


def test_flush_raises_when_a_message_is_not_delivered(rd_settings: KafkaSettings,
                                                      topic: str) -> None:
    ensure_topics(rd_settings, {topic: 1})
    sink = open_sink(rd_settings)
    sink.send(topic, b"ok", partition=0)
    sink.flush()
    sink.send(topic, b"refused", partition=5)  # the topic has one partition
    for _ in range(2):  # kept and sent again by every flush: never silently dropped
        with pytest.raises(ProducerFlushError, match="1 message"):
            sink.flush(timeout=10)
    sink.close()


def test_producer_tuning_options_map_or_are_refused(rd_settings: KafkaSettings) -> None:
    from stream.simulator import PRODUCER_TUNING

    open_sink(rd_settings, **PRODUCER_TUNING).close()  # gzip, batch_size, linger_ms
    open_sink(rd_settings, linger_ms=20, batch_size=262_144).close()  # serve's
    with pytest.raises(TypeError, match="no_such_option"):
        open_sink(rd_settings, no_such_option=1)


# -- `distill serve` with either client ends in the same state -----------------------------


SAMPLES = 250


def serve_config(topics: Topics, bootstrap: str, state_dir: Path, client: str) -> Config:
    cfg = load_config(None, env={}, overrides={
        "kafka": {"bootstrap_servers": bootstrap, "input_topic": topics.input,
                  "dead_letter_topic": topics.dlq, "alerts_topic": topics.alerts,
                  "groups_topic": topics.groups, "group_id": topics.group_id,
                  "partitions": 2, "client": client},
        "serve": {"state_dir": str(state_dir), "metrics_address": "127.0.0.1:0",
                  "checkpoint_every": 400},
    })
    assert isinstance(cfg, Config), cfg
    return cfg


def comparable(status: dict, input_topic: str) -> dict:
    """The status document less what differs between any two runs (paths, wall clock, the
    internal observations topic, whose name is the run's consumer group's)."""
    status = dict(status)
    status.pop("state_dir")
    status["checkpoints"] = sorted((c["partition"], c["offset"]) for c in status["checkpoints"]
                                   if c["topic"] == input_topic)
    return status


def test_serve_with_librdkafka_ends_where_kafka_python_does(kafka_settings: KafkaSettings,
                                                            tmp_path: Path) -> None:
    scenario = load_scenario("default").with_samples(SAMPLES)
    scenario = scenario.model_copy(update={  # the drifts early, so detectors fire
        "drift": [d.model_copy(update={"at": 100}) for d in scenario.drift]})
    events = list(generate(scenario, seed=5))
    base = Topics.fresh()
    produce_events(kafka_settings, base.input, events, partitions=2)

    statuses, sources = {}, {}
    for client in ("kafka-python", "librdkafka"):
        topics = dataclasses.replace(Topics.fresh(), input=base.input)  # same stream
        state = tmp_path / client
        service = MonitorService(serve_config(topics, kafka_settings.bootstrap_servers, state,
                                              client), limits=RunLimits(idle_exit_s=1.0))
        summary = service.run()
        sources[client] = type(service.source).__name__
        assert summary.records == len(events)
        statuses[client] = comparable(status_json(state), base.input)

    assert sources == {"kafka-python": "KafkaSource", "librdkafka": "LibrdkafkaSource"}
    kp, rd = statuses["kafka-python"], statuses["librdkafka"]
    assert sum(offset for _, offset in rd["checkpoints"]) == len(events)
    assert {t: v["events"] for t, v in rd["teachers"].items()} == {
        t.name: SAMPLES for t in scenario.teachers}
    assert rd["groups_completed"] + rd["groups_timed_out"] + rd["groups_open"] == SAMPLES
    detections = sum(s.get("detections", 0) for t in rd["teachers"].values()
                     for s in t["signals"].values())
    assert detections > 0  # the comparison covers detector state that moved
    assert rd == kp


def test_a_fatal_client_error_stops_serve_instead_of_retrying_forever(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """librdkafka's fatal errors (reported through error_cb) leave a consumer that cannot
    recover: serve must stop with FatalClientError (the CLI exits non-zero for systemd to
    restart it) rather than loop in its retry backoff."""
    events = list(generate(load_scenario("default").with_samples(100), seed=1))
    topics = Topics.fresh()
    produce_events(kafka_settings, topics.input, events, partitions=2)
    service = MonitorService(serve_config(topics, kafka_settings.bootstrap_servers, tmp_path,
                                          "librdkafka"), limits=RunLimits(idle_exit_s=30.0))
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            service.run()
            outcome.append(None)
        except BaseException as exc:  # the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while service.summary.records < len(events) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.summary.records == len(events)
    assert isinstance(service.source, LibrdkafkaSource)
    service.source._on_error(RdKafkaError(RdKafkaError._FATAL, "injected fatal error",
                                          fatal=True))
    thread.join(timeout=20)
    assert not thread.is_alive(), "serve kept retrying after a fatal client error"
    assert len(outcome) == 1 and isinstance(outcome[0], FatalClientError), outcome
