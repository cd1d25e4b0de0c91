"""At-least-once outputs under a broker that times out produces.

The embedded broker is frozen (SIGSTOP) right after serve sends an output, at random sends,
for longer than the producer's delivery timeout, so those deliveries fail for real. Every
output of every input record must still reach its topic: a failed message is kept and sent
again, and no checkpoint commits past it until it is acknowledged."""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from serving import Topics, produce_raw, read_topic, run_in_thread

import distill.monitor.service as service_module
from distill.groups import TeacherGroup
from stream.archive import read_archive
from stream.broker import EmbeddedBroker
from stream.kafka import KafkaSettings
from stream.simulator import generate, load_scenario

PAUSE_S = 3.0  # > the 1.5 s delivery timeout below


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_every_output_reaches_its_topic_when_produces_time_out(
        tmp_path: Path, client: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    if client == "librdkafka":
        pytest.importorskip("confluent_kafka")
    rng = random.Random(11)
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        settings = KafkaSettings(broker.bootstrap_servers)
        topics = Topics.fresh()
        events = list(generate(load_scenario("default").with_samples(120), seed=5))
        stream = [(e.sample_id.encode(), e.to_json_bytes()) for e in events]
        for i in range(20):
            stream.insert(rng.randrange(len(stream)), (b"bad", b"{not json %d" % i))
        produce_raw(settings, topics.input, stream)

        real_open_sink = service_module.open_sink
        freeze_at = set(rng.sample(range(20, 150), 3))  # the sends after which it freezes
        sends = [0]
        unfrozen = threading.Event()
        unfrozen.set()

        def open_sink(s: KafkaSettings, **tuning: Any) -> Any:
            sink = real_open_sink(dataclasses.replace(s, request_timeout_ms=1000),
                                  delivery_timeout_ms=1500, **tuning)
            send = sink.send

            def send_then_maybe_freeze(*args: Any, **kwargs: Any) -> None:
                send(*args, **kwargs)
                sends[0] += 1
                if sends[0] in freeze_at and unfrozen.is_set():
                    unfrozen.clear()
                    broker.pause()
                    threading.Timer(PAUSE_S, lambda: (broker.resume(), unfrozen.set())).start()

            sink.send = send_then_maybe_freeze
            return sink

        monkeypatch.setattr(service_module, "open_sink", open_sink)
        cfg = topics.config(broker.bootstrap_servers, tmp_path / "state", checkpoint_every=50)
        cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"client": client})})
        with caplog.at_level(logging.WARNING, logger="distill.serve"):
            summary = run_in_thread(cfg, idle_exit_s=6.0)
        unfrozen.wait(PAUSE_S + 5)
        assert summary.records == len(stream)
        assert any("checkpoint not committed" in r.getMessage() for r in caplog.records), \
            "no produce failed: the test did not exercise a fault"

        archived = {TeacherGroup.from_json(x).sample_id
                    for x in read_archive(tmp_path / "state" / "archive")}
        groups = read_topic(settings, topics.groups, len(archived), timeout=30)
        assert archived and archived <= {r.key.decode() for r in groups}
        alerts_log = (tmp_path / "state" / "alerts.jsonl").read_bytes().splitlines()
        alerts = read_topic(settings, topics.alerts, len(alerts_log), timeout=30)
        on_topic = {orjson.dumps(orjson.loads(r.value)) for r in alerts}
        assert {orjson.dumps(orjson.loads(x)) for x in alerts_log} <= on_topic
        dead = read_topic(settings, topics.dlq, 20, timeout=30)
        assert {r.value for r in dead} == {b"{not json %d" % i for i in range(20)}
