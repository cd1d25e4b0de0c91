"""`distill serve` against the real broker: the loop, its outputs, and the edge cases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from serving import Topics, produce_events, produce_raw, read_topic, run_in_thread, status_json

from distill.groups import TeacherGroup
from distill.monitor.status import monitor_status
from stream.archive import read_archive
from stream.deadletter import header_dict
from stream.events import TeacherEvent
from stream.kafka import KafkaSettings
from stream.simulator import generate, load_scenario

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(sample: int, teacher: str, answer: str = "yes", eid: str | None = None,
          at: datetime | None = None) -> TeacherEvent:
    return TeacherEvent(event_id=eid or f"{sample}-{teacher}", sample_id=f"s{sample}",
                        teacher=teacher, output=f"Reasoning. Final answer: {answer}",
                        produced_at=at or T0 + timedelta(seconds=60 * sample))


def test_serve_counts_every_event_and_emits_groups(kafka_settings: KafkaSettings,
                                                   tmp_path: Path) -> None:
    topics = Topics.fresh()
    scenario = load_scenario("default").with_samples(150)
    events = list(generate(scenario, seed=3))
    produce_events(kafka_settings, topics.input, events, partitions=2)

    summary = run_in_thread(topics.config(kafka_settings.bootstrap_servers, tmp_path,
                                          partitions=2, checkpoint_every=100))
    assert summary.records == len(events)

    status = status_json(tmp_path)
    per_teacher = {t.name: 150 for t in scenario.teachers}
    assert {t: v["events"] for t, v in status["teachers"].items()} == per_teacher
    assert status["groups_completed"] + status["groups_timed_out"] + status["groups_open"] == 150
    assert sum(cp["offset"] for cp in status["checkpoints"]) == len(events)

    archived = [TeacherGroup.from_json(line) for line in read_archive(tmp_path / "archive")]
    on_topic = read_topic(kafka_settings, topics.groups, len(archived))
    assert sorted(g.sample_id for g in archived) == sorted(r.key.decode() for r in on_topic)
    assert len({g.sample_id for g in archived}) == len(archived)  # each group once
    complete = [g for g in archived if g.status == "complete"]
    assert complete and all(len(g.answers) == len(scenario.teachers) for g in complete)


def test_duplicates_unknown_teachers_and_out_of_order_times(kafka_settings: KafkaSettings,
                                                            tmp_path: Path) -> None:
    topics = Topics.fresh()
    evs = [event(0, "a"), event(0, "b"), event(0, "a"),  # duplicate event id
           event(1, "b", at=T0 + timedelta(seconds=61)),
           event(1, "a", at=T0 + timedelta(seconds=30)),  # produced earlier than its peer
           event(1, "stranger"),  # a teacher nobody configured
           event(2, "a"), event(2, "b")]
    produce_events(kafka_settings, topics.input, evs)
    cfg = topics.config(kafka_settings.bootstrap_servers, tmp_path, expected_teachers=["a", "b"])
    run_in_thread(cfg)
    status = monitor_status(tmp_path)
    assert {t: v["events"] for t, v in status["teachers"].items()} == {
        "a": 3, "b": 3, "stranger": 1}
    assert status["duplicates"] == 1
    assert status["groups_completed"] == 3  # the stranger never holds a group open


def test_teacher_that_stops_answering_times_out_its_groups(kafka_settings: KafkaSettings,
                                                           tmp_path: Path) -> None:
    topics = Topics.fresh()
    evs = [event(i, t) for i in range(20) for t in ("a", "b", "c") if t != "c" or i < 10]
    produce_events(kafka_settings, topics.input, evs)
    cfg = topics.config(kafka_settings.bootstrap_servers, tmp_path, group_timeout_s=180)
    run_in_thread(cfg)
    status = monitor_status(tmp_path)
    assert status["groups_completed"] == 10
    # samples 10..16 time out once the watermark passes them by 180 s; 17..19 remain open
    assert status["groups_timed_out"] == 7
    assert status["groups_open"] == 3


def test_bad_messages_are_dead_lettered_and_the_offset_advances(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    topics = Topics.fresh()
    good = [event(i, t) for i in range(3) for t in ("a", "b")]
    values = [(b"k", e.to_json_bytes()) for e in good]
    values.insert(2, (b"k", b"{not json"))
    values.insert(4, (b"k", b'{"event_id": "x"}'))
    produce_raw(kafka_settings, topics.input, values)
    summary = run_in_thread(topics.config(kafka_settings.bootstrap_servers, tmp_path))
    assert summary.records == 8 and summary.dead_lettered == 2
    dead = read_topic(kafka_settings, topics.dlq, 2)
    reasons = sorted(header_dict(r.headers)["dlq.reason"] for r in dead)
    assert reasons == ["missing_field:sample_id", "not_json"]
    assert monitor_status(tmp_path)["checkpoints"][0]["offset"] == 8


def test_alerts_topic_carries_json_alerts(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    topics = Topics.fresh()
    # "a" answers "yes" for 600 samples, then refuses: a drift every detector family sees
    evs = [event(i, "a", "yes" if i < 600 else "") for i in range(1200)]
    evs = [e if i < 600 else TeacherEvent(e.event_id, e.sample_id, e.teacher,
                                          "I cannot help with that request.", e.produced_at)
           for i, e in enumerate(evs)]
    produce_events(kafka_settings, topics.input, evs)
    summary = run_in_thread(topics.config(kafka_settings.bootstrap_servers, tmp_path))
    assert summary.alerts, "a switch from answers to refusals must raise an alert"
    first = min(a["index"] for a in summary.alerts)
    assert 600 <= first <= 700
    alerts = read_topic(kafka_settings, topics.alerts, len(summary.alerts))
    doc = json.loads(alerts[0].value)
    assert doc["teacher"] == "a" and doc["signal"] in {"own", "peer"}  # the joint tests


def test_unreadable_checkpoint_stops_serve_with_the_file_named(kafka_settings: KafkaSettings,
                                                               tmp_path: Path) -> None:
    import subprocess
    import sys

    topics = Topics.fresh()
    produce_events(kafka_settings, topics.input, [event(0, "a")])
    run_in_thread(topics.config(kafka_settings.bootstrap_servers, tmp_path))
    cp = next((tmp_path / "checkpoints").glob("*.json"))
    doc = json.loads(cp.read_text())
    doc["state"]["bank"] = {"version": 999}
    cp.write_text(json.dumps(doc))
    proc = subprocess.run([sys.executable, "-c", "from distill.cli import main; main()",
                           "serve", "--idle-exit", "2", "--metrics-address", "127.0.0.1:0"],
                          env=topics.env(kafka_settings.bootstrap_servers, tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "cannot restore a checkpoint" in proc.stderr and cp.name in proc.stderr


def test_bounded_buffers_count_their_overflow_in_metrics(kafka_settings: KafkaSettings,
                                                         tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from distill.monitor.service import MonitorService, RunLimits

    topics = Topics.fresh()
    # "b" never answers, so every sample stays open: 6 samples through a buffer of 2
    evs = [event(i, "a") for i in range(6)]
    produce_events(kafka_settings, topics.input, evs)
    cfg = topics.config(kafka_settings.bootstrap_servers, tmp_path, expected_teachers=["a", "b"],
                        join_buffer_max=2, dedup_window=3)
    registry = CollectorRegistry()
    MonitorService(cfg, registry=registry, limits=RunLimits(max_records=6)).run()
    assert registry.get_sample_value("distill_join_buffer_overflow_total") == 4
    assert registry.get_sample_value("distill_dedup_window_overflow_total") == 3
    assert monitor_status(tmp_path)["join_overflow"] == 4
