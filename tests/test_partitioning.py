"""One detector per teacher: the same stream gives the same alerts on 1, 4 and 8 input
partitions, in replay, and when the stages run as separate instances."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from serving import Topics, produce_events

from distill.monitor.driftstate import DriftStateReader
from distill.monitor.pipeline import MonitorPipeline
from distill.monitor.replay import Replay, open_source
from distill.monitor.service import MonitorService, RunLimits, RunSummary
from distill.monitor.status import monitor_status
from stream.kafka import KafkaSettings
from stream.simulator import change_points, generate, load_scenario

SAMPLES = 900


def scenario():
    """The default scenario's four drifts, 500 samples earlier (300, 500, 500, 700): each
    is detected within the stream, which is short enough for three serve runs."""
    base = load_scenario("default")
    return base.model_copy(update={"samples": SAMPLES, "drift": [
        d.model_copy(update={"at": d.at - 500}) for d in base.drift]})

pytestmark = pytest.mark.broker


def alerts_of(docs: list[dict]) -> list[tuple[str, str, int]]:
    return [(a["teacher"], a["signal"], a["index"]) for a in docs]


def serve(cfg, **limits: object) -> RunSummary:
    return MonitorService(cfg, limits=RunLimits(idle_exit_s=2.0, finish=True, **limits)).run()


@pytest.fixture(scope="module")
def stream() -> tuple[list, list[tuple[str, str, int]]]:
    """The simulated stream and what the pipeline in one process alerts on it."""
    events = list(generate(scenario(), seed=3))
    return events, alerts_of([a.to_dict() for a in MonitorPipeline().run(events).alerts])


def test_the_reference_run_finds_scheduled_drifts(stream) -> None:
    """The stream the partitioned runs must reproduce has alerts worth comparing: scheduled
    drifts found within 300 of their teacher's events (the default joint bank finds the
    verbosity and refusal drifts here, and may spend its budget on one false alarm)."""
    _, want = stream
    changes = {cp["teacher"]: cp["event_index_of_teacher"] for cp in change_points(scenario())}
    found = {t for t, _, i in want if t in changes and 0 <= i - changes[t] < 300}
    assert len(found) >= 2
    assert sum(t not in changes for t, _, _ in want) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("partitions", [1, 8])  # 4: the test below
def test_same_alerts_on_any_partitioning_and_in_replay(stream, partitions: int,
                                                       kafka_settings: KafkaSettings,
                                                       tmp_path: Path) -> None:
    events, want = stream
    topics = Topics.fresh()
    produce_events(kafka_settings, topics.input, events, partitions=partitions)
    cfg = topics.config(kafka_settings.bootstrap_servers, tmp_path, partitions=partitions,
                        checkpoint_every=2000)
    summary = serve(cfg)
    assert summary.records == len(events)
    assert alerts_of(list(summary.alerts)) == want
    status = monitor_status(tmp_path)
    assert status["detect"]["late"] == 0 and status["detect"]["buffered"] == 0
    assert {t: v["detected_events"] for t, v in status["teachers"].items()} == {
        t: SAMPLES for t in status["teachers"]}
    if partitions == 8:  # the archive serve wrote replays to the same alerts
        replay = Replay(tmp_path / "replayed")
        replay.run(open_source(tmp_path))
        assert alerts_of(replay.alerts) == want


@pytest.mark.slow
def test_separate_ingest_and_detect_instances_on_4_partitions_give_the_same_alerts(
        stream, kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    events, want = stream
    topics = Topics.fresh()
    produce_events(kafka_settings, topics.input, events, partitions=4)
    base = dict(partitions=4, checkpoint_every=2000)
    results: dict[str, RunSummary] = {}

    def run(role: str, idle: float) -> None:
        cfg = topics.config(kafka_settings.bootstrap_servers, tmp_path, role=role, **base)
        results[role] = MonitorService(cfg, limits=RunLimits(idle_exit_s=idle, finish=True)).run()

    detect = threading.Thread(target=run, args=("detect", 6.0))
    detect.start()
    run("ingest", 2.0)  # finishes its stream: closes groups, releases the detect stage
    detect.join(timeout=300)
    assert results["ingest"].records == len(events) and results["ingest"].alerts_total == 0
    assert alerts_of(list(results["detect"].alerts)) == want

    # the compacted drift-state topic: what an ingest-only instance reads for its groups
    reader = DriftStateReader(kafka_settings, f"{topics.group_id}-drift-state")
    deadline = time.monotonic() + 30
    while len(reader.states) < 7 and time.monotonic() < deadline:
        reader.poll()
        time.sleep(0.2)
    reader.close()
    assert len(reader.states) == 7
    assert all(reader.states[t].evidence > 0 for t, _, _ in want)
