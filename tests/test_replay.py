"""distill replay: sources, determinism, the state dir it writes, pacing and republishing."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.cli import main
from distill.monitor.replay import (
    Replay,
    StateDirNotEmpty,
    open_source,
    paced,
    prepare_state_dir,
    republish,
)
from distill.monitor.status import monitor_status
from stream.simulator import (
    change_points,
    changepoints_path,
    generate,
    load_scenario,
    write_changepoints,
    write_jsonl_gz,
)

SAMPLES = 1300  # past the default scenario's drifts at 800, 1000 and 1200


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scenario = load_scenario("default").with_samples(SAMPLES)
    path = tmp_path_factory.mktemp("sim") / "sim.jsonl.gz"
    write_jsonl_gz(generate(scenario, seed=3), path)
    write_changepoints(change_points(scenario), changepoints_path(path))
    return path


@pytest.fixture(scope="module")
def first_run(sim_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("replay") / "state"
    prepare_state_dir(state)
    Replay(state, snapshot_every=700).run(open_source(sim_file))
    return state


def test_same_input_gives_same_alerts(sim_file: Path, first_run: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    prepare_state_dir(again)
    waits: list[float] = []
    Replay(again, snapshot_every=700).run(open_source(sim_file), speed=60.0,
                                          sleep=waits.append)  # paced, without waiting
    assert waits
    alerts = (first_run / "alerts.jsonl").read_text()
    assert alerts and alerts == (again / "alerts.jsonl").read_text()
    flagged = {json.loads(line)["teacher"] for line in alerts.splitlines()}
    unscheduled = flagged - {"glm-4.5v", "grok-4", "moonshot", "qwen-vl-max"}
    # the bank's budget (0.5 false alarms per 10k events per teacher) allows ~0.45 over
    # these 9,100 events: one unscheduled teacher is within it, two are not
    assert len(unscheduled) <= 1, unscheduled


def test_state_dir_reads_with_distill_status(first_run: Path) -> None:
    doc = monitor_status(first_run)
    assert {t: v["events"] for t, v in doc["teachers"].items()} == dict.fromkeys(
        ["gemini-2.5", "glm-4.5v", "gpt-5", "grok-4", "moonshot", "qwen-vl-max", "sonnet-4"],
        SAMPLES)
    assert doc["groups_completed"] == SAMPLES
    assert doc["checkpoints"][0]["offset"] == 7 * SAMPLES
    timeline = [json.loads(x) for x in (first_run / "timeline.jsonl").read_text().splitlines()]
    assert [s["events"] for s in timeline] == [700 * k for k in range(1, 14)] + [7 * SAMPLES]
    assert json.loads((first_run / "changepoints.json").read_text())[0]["teacher"] == "glm-4.5v"


def test_archive_replays_to_the_same_alerts(first_run: Path, tmp_path: Path) -> None:
    source = open_source(first_run)
    assert source.kind == "archive" and len(source.events) == 7 * SAMPLES
    assert [e.produced_at for e in source.events] == sorted(e.produced_at
                                                            for e in source.events)
    second = tmp_path / "second"
    prepare_state_dir(second)
    summary = Replay(second, snapshot_every=700).run(source)
    assert (second / "alerts.jsonl").read_text() == (first_run / "alerts.jsonl").read_text()
    assert summary["groups_completed"] == SAMPLES and summary["change_points"]


def test_non_empty_state_dir_is_refused_unless_forced(first_run: Path, tmp_path: Path) -> None:
    with pytest.raises(StateDirNotEmpty):
        prepare_state_dir(first_run)
    keep = tmp_path / "mine.txt"
    keep.write_text("not a replay output")
    (tmp_path / "alerts.jsonl").write_text("old")
    prepare_state_dir(tmp_path, force=True)
    assert keep.exists() and not (tmp_path / "alerts.jsonl").exists()


def test_pacing_follows_produced_at(sim_file: Path) -> None:
    events = open_source(sim_file).events[:700]
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    assert list(paced(events, 600.0, sleep, clock=lambda: now[0])) == events
    span = (events[-1].produced_at - events[0].produced_at).total_seconds()
    assert now[0] == pytest.approx(span / 600.0)


def _write_pack(path: Path) -> None:
    records = []
    for i in range(40):
        for version, right in (("m-v1", True), ("m-v2", i % 2 == 0), ("p1", True),
                               ("p2", i % 3 != 0)):
            answer = "yes" if right else "no"
            records.append({"source": "t", "task": "prime", "sample_id": f"prime:{i}",
                            "prompt": f"Is {i} prime?", "teacher": version.split("-")[0],
                            "teacher_version": version, "output_text": f"[{answer}]",
                            "answer": answer, "ground_truth": "yes", "correct": right,
                            "extra": {}})
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    (path.parent / "drift_chains.json").write_text(json.dumps(
        [{"file": path.name, "task": "prime", "kind": "version_update",
          "chain": ["m-v1", "m-v2"]}]))


def test_pack_and_chain_give_the_drift_stream(tmp_path: Path) -> None:
    pack = tmp_path / "pack.jsonl.gz"
    _write_pack(pack)
    source = open_source(pack, chain="m-v1->m-v2")
    assert source.kind == "pack" and len(source.events) == 40 * 3
    assert source.change_points == [{"teacher": "m", "kind": "version_update",
                                     "event_index_of_teacher": 20}]
    assert open_source(pack, chain="0").events == source.events


def test_cli_replays_then_refuses_the_used_state_dir(sim_file: Path, tmp_path: Path) -> None:
    state, out = tmp_path / "st", tmp_path / "summary.json"
    runner = CliRunner()
    first = runner.invoke(main, ["replay", str(sim_file), "--state-dir", str(state),
                                 "--json", str(out)])
    assert first.exit_code == 0, first.output
    assert json.loads(out.read_text())["events"] == 7 * SAMPLES
    again = runner.invoke(main, ["replay", str(sim_file), "--state-dir", str(state)])
    assert again.exit_code == 2 and "not empty" in again.output
    status = runner.invoke(main, ["status", "--state-dir", str(state), "--json"])
    assert json.loads(status.output)["groups_completed"] == SAMPLES


@pytest.mark.broker
def test_republish_sends_every_event_without_a_consumer_group(sim_file: Path,
                                                              bootstrap_servers: str,
                                                              topic: str) -> None:
    from kafka import KafkaConsumer, TopicPartition

    from stream.kafka import KafkaSettings, KafkaSink, ensure_topics

    settings = KafkaSettings(bootstrap_servers=bootstrap_servers)
    ensure_topics(settings, {topic: 2})
    source = open_source(sim_file)
    source.events = source.events[:200]
    sink = KafkaSink(settings)
    assert republish(source, sink, topic) == 200
    sink.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, p) for p in (0, 1)])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < 200 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            got.extend(r.value for r in records)
    consumer.close()
    ids = sorted(json.loads(v)["event_id"] for v in got)
    assert ids == sorted(e.event_id for e in source.events)
