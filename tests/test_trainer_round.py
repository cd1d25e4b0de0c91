"""The round's logic (bootstrap, gate, idempotency, failure) and the follow loop's Kafka side.

The training backend here is a stand-in that copies model directories and reports scripted
probe scores, so these tests pin the round's bookkeeping in seconds. The real APO backend
runs end to end in tests/test_retrain_e2e.py.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from distill.groups import Consensus, DriftState, TeacherAnswer, TeacherGroup
from distill.metrics import TrainerMetrics
from distill.trainer.buffer import GroupBuffer
from distill.trainer.exceptions import RoundBusyError
from distill.trainer.follow import Follower, FollowSettings
from distill.trainer.progress import RoundControl
from distill.trainer.registry import Registry
from distill.trainer.round import (
    RoundSettings,
    TrainerPaths,
    TrainOutput,
    round_lock,
    run_round,
)
from distill.trainer.triggers import TriggerPolicy
from stream.kafka import KafkaSettings, KafkaSink, KafkaSource, ensure_topics


def group(i: int) -> TeacherGroup:
    return TeacherGroup(
        f"s{i}", f"case {i}", "complete",
        [TeacherAnswer("a", f"e{i}a", "yes because", "yes"),
         TeacherAnswer("b", f"e{i}b", "no because", "no")],
        Consensus("yes", 1, True), {"a": DriftState(0.0, False), "b": DriftState(1.0, True)})


class StandIn:
    """Copies model dirs; the candidate's probe score comes from ``scores`` in order."""

    def __init__(self, scores: Sequence[float] = (), fail: bool = False,
                 subdir: str = "") -> None:
        self.scores = list(scores)
        self.fail = fail
        self.subdir = subdir
        self.calls: Counter[str] = Counter()
        self.trained_on: list[list[str]] = []

    def bootstrap(self, student_dir: Path, groups: Sequence[TeacherGroup], out_dir: Path,
                  settings: RoundSettings, control: RoundControl) -> Path:
        self.calls["bootstrap"] += 1
        shutil.copytree(student_dir, out_dir, dirs_exist_ok=True)
        (out_dir / "score.txt").write_text("0.5")
        return out_dir

    def train(self, policy_dir: Path, reference_dir: Path, groups: Sequence[TeacherGroup],
              out_dir: Path, settings: RoundSettings, control: RoundControl) -> TrainOutput:
        self.calls["train"] += 1
        self.trained_on.append([g.sample_id for g in groups])
        (out_dir / "model.safetensors").write_bytes(b"partial")
        if self.fail:
            raise RuntimeError("CUDA out of memory (stand-in)")
        out_dir = out_dir / self.subdir
        shutil.copytree(policy_dir, out_dir, dirs_exist_ok=True)
        (out_dir / "score.txt").write_text(str(self.scores.pop(0)))
        return TrainOutput(out_dir, {"loss": 0.7, "reward_margin": 0.2,
                                     "groups": float(len(groups)), "synthesis_fallbacks": 2.0})

    def evaluate(self, model_dir: Path, probe: Sequence[TeacherGroup],
                 settings: RoundSettings) -> dict[str, float]:
        self.calls["evaluate"] += 1
        return {"agreement": float((model_dir / "score.txt").read_text()),
                "n_probe": float(len(probe))}


@pytest.fixture()
def student(tmp_path: Path) -> Path:
    d = tmp_path / "student"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"weights")
    return d


def fill(paths: TrainerPaths, ids: range) -> None:
    with GroupBuffer(paths.buffer, probe_fraction=0.2) as buf:
        buf.add([group(i) for i in ids])


SETTINGS = RoundSettings(steps=1, replay_fraction=0.0)


def test_first_round_bootstraps_the_reference_then_promotes_a_better_candidate(
        tmp_path: Path, student: Path) -> None:
    paths = TrainerPaths(tmp_path / "state")
    fill(paths, range(30))
    engine = StandIn(scores=[0.6])
    out = run_round(paths, SETTINGS, run_id="r1", student=student, engine=engine)
    assert (out.status, out.version, out.current) == ("promoted", "v0002", "v0002")
    reg = Registry(paths.registry)
    assert reg.reference().version == "v0001" and reg.get("v0002").parent == "v0001"
    assert out.metrics["eval_agreement"] == 0.6 and out.metrics["current_eval_agreement"] == 0.5
    assert engine.calls == {"bootstrap": 1, "train": 1, "evaluate": 2}
    with GroupBuffer(paths.buffer) as buf:
        probe = {g.sample_id for g in buf.probe(100)}
    assert probe and not probe & set(engine.trained_on[0])


def test_a_model_written_to_a_subdirectory_is_registered_there(
        tmp_path: Path, student: Path) -> None:
    paths = TrainerPaths(tmp_path / "state")
    fill(paths, range(30))
    out = run_round(paths, SETTINGS, student=student, engine=StandIn([0.6], subdir="merged"))
    reg = Registry(paths.registry)
    model_dir = reg.model_dir(reg.get(out.version))
    assert model_dir.name == "merged" and (model_dir / "score.txt").read_text() == "0.6"
    assert reg.verify(out.version)


def test_a_worse_candidate_is_kept_out_and_the_current_version_stays(
        tmp_path: Path, student: Path) -> None:
    paths = TrainerPaths(tmp_path / "state")
    fill(paths, range(30))
    out = run_round(paths, SETTINGS, run_id="r1", student=student, engine=StandIn([0.4]))
    assert (out.status, out.current) == ("kept", "v0001")
    assert out.ok and "agreement 0.4000 < 0.5000" in out.reason
    reg = Registry(paths.registry)
    assert reg.get(out.version).status == "rejected" and reg.get(out.version).path is None


def test_the_next_round_trains_only_on_groups_that_arrived_since(
        tmp_path: Path, student: Path) -> None:
    paths = TrainerPaths(tmp_path / "state")
    fill(paths, range(10))
    engine = StandIn([0.6, 0.7])
    run_round(paths, SETTINGS, student=student, engine=engine)
    fill(paths, range(10, 20))
    second = run_round(paths, SETTINGS, engine=engine)
    assert second.status == "promoted"
    assert all(int(s[1:]) >= 10 for s in engine.trained_on[1])
    assert run_round(paths, SETTINGS, engine=engine).status == "skipped"


def test_a_finished_run_id_is_answered_from_the_registry_and_not_run_again(
        tmp_path: Path, student: Path) -> None:
    paths = TrainerPaths(tmp_path / "state")
    fill(paths, range(30))
    engine = StandIn([0.6])
    first = run_round(paths, SETTINGS, run_id="r1", student=student, engine=engine)
    fill(paths, range(30, 60))
    again = run_round(paths, SETTINGS, run_id="r1", engine=engine)
    assert again.reused and (again.status, again.version) == (first.status, first.version)
    assert engine.calls["train"] == 1
    assert [v.version for v in Registry(paths.registry).versions()] == ["v0001", "v0002"]


def test_a_failed_round_is_recorded_leaves_no_partial_model_and_can_be_rerun(
        tmp_path: Path, student: Path) -> None:
    paths = TrainerPaths(tmp_path / "state")
    fill(paths, range(30))
    run_round(paths, SETTINGS, run_id="r0", student=student, engine=StandIn([0.6]))
    fill(paths, range(30, 40))
    failed = run_round(paths, SETTINGS, run_id="r1", engine=StandIn(fail=True))
    assert failed.status == "failed" and "out of memory" in failed.reason
    reg = Registry(paths.registry)
    assert reg.current().version == "v0002" and reg.run("r1")["status"] == "failed"
    assert sorted(p.name for p in (paths.registry / "models").iterdir()) == ["v0001", "v0002"]
    retry = run_round(paths, SETTINGS, run_id="r1", engine=StandIn([0.9]))
    assert retry.status == "promoted" and not retry.reused


def test_a_second_round_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    paths = TrainerPaths(tmp_path / "state")
    with round_lock(paths), pytest.raises(RoundBusyError):
        run_round(paths, SETTINGS, engine=StandIn())


def test_round_updates_the_trainer_metrics(tmp_path: Path, student: Path) -> None:
    paths = TrainerPaths(tmp_path / "state")
    fill(paths, range(30))
    reg = CollectorRegistry()
    metrics = TrainerMetrics(reg)
    run_round(paths, SETTINGS, trigger="alert", student=student, engine=StandIn([0.6]),
              metrics=metrics)
    run_round(paths, SETTINGS, engine=StandIn(fail=True), metrics=metrics)  # nothing new: skip
    fill(paths, range(30, 40))
    run_round(paths, SETTINGS, trigger="count", engine=StandIn(fail=True), metrics=metrics)

    def value(name: str, labels: dict[str, str] | None = None) -> float | None:
        return reg.get_sample_value(name, labels or {})

    assert value("distill_retrain_runs_total", {"trigger": "alert", "status": "promoted"}) == 1
    assert value("distill_retrain_runs_total", {"trigger": "count", "status": "failed"}) == 1
    assert value("distill_retrain_duration_seconds_count") == 2
    assert value("distill_student_version") == 2
    assert value("distill_student_eval_score", {"metric": "agreement"}) == 0.6
    assert value("distill_train_loss") == 0.7 and value("distill_train_reward_margin") == 0.2
    assert value("distill_synthesis_fallbacks_total") == 2
    assert value("distill_retrain_last_success_timestamp_seconds") > 0


@pytest.mark.broker
def test_follow_buffers_groups_commits_offsets_and_trains_on_count_and_alert(
        tmp_path: Path, student: Path, kafka_settings: KafkaSettings, topic: str) -> None:
    groups_topic, alerts_topic = f"{topic}-groups", f"{topic}-alerts"
    ensure_topics(kafka_settings, {groups_topic: 2, alerts_topic: 1})
    sink = KafkaSink(kafka_settings)
    for i in range(12):
        sink.send(groups_topic, group(i).to_json(), key=f"s{i}".encode())
    sink.send(groups_topic, b"not a group")
    sink.flush()
    paths = TrainerPaths(tmp_path / "state")
    settings = FollowSettings(groups_topic, alerts_topic, group_id=f"{topic}-trainer",
                              policy=TriggerPolicy(every_groups=8, every_s=3600.0),
                              round=SETTINGS, probe_fraction=0.2, poll_timeout_ms=200)
    engine = StandIn([0.6, 0.7])

    def follower() -> Follower:
        source = KafkaSource(kafka_settings, [groups_topic, alerts_topic], settings.group_id)
        return Follower(paths, settings, source, student=student, engine=engine)

    first = follower()
    outcomes = first.run(timeout_s=60, max_rounds=1)
    assert [(o.trigger, o.status) for o in outcomes] == [("count", "promoted")]
    assert first.bad_records == 1
    check = KafkaSource(kafka_settings, [groups_topic], f"{topic}-trainer")
    try:  # every polled record, the bad one included, is committed once buffered
        assert sum(check.committed(groups_topic, p) or 0 for p in (0, 1)) == 13
    finally:
        check.close()

    for i in range(12, 14):
        sink.send(groups_topic, group(i).to_json(), key=f"s{i}".encode())
    sink.send(alerts_topic, json.dumps({"teacher": "b", "signal": "answer"}).encode())
    sink.flush()
    sink.close()
    second = follower()
    stopper = threading.Timer(60, second.stop)
    stopper.start()
    try:
        outcomes = second.run(max_rounds=1)
    finally:
        stopper.cancel()
    assert [(o.trigger, o.status) for o in outcomes] == [("alert", "promoted")]
    assert Registry(paths.registry).current().version == "v0003"
    with GroupBuffer(paths.buffer) as buf:
        assert buf.get_meta("alert_pending") == "0"
        c = buf.counts()
        assert c.train + c.probe == 14


@pytest.mark.broker
def test_alertmanager_webhook_queues_a_round(tmp_path: Path, student: Path,
                                             kafka_settings: KafkaSettings, topic: str) -> None:
    from urllib.request import Request, urlopen

    from prometheus_client import CollectorRegistry

    from distill.http import start_http_server

    groups_topic, alerts_topic = f"{topic}-groups", f"{topic}-alerts"
    ensure_topics(kafka_settings, {groups_topic: 1, alerts_topic: 1})
    sink = KafkaSink(kafka_settings)
    for i in range(6):
        sink.send(groups_topic, group(i).to_json(), key=f"s{i}".encode())
    sink.flush()
    sink.close()
    settings = FollowSettings(groups_topic, alerts_topic, group_id=f"{topic}-trainer",
                              policy=TriggerPolicy(every_groups=100, every_s=3600.0),
                              round=SETTINGS, probe_fraction=0.2, poll_timeout_ms=200)
    source = KafkaSource(kafka_settings, [groups_topic, alerts_topic], settings.group_id)
    follower = Follower(TrainerPaths(tmp_path / "state"), settings, source, student=student,
                        engine=StandIn([0.6]))
    server = start_http_server("127.0.0.1:0", CollectorRegistry(), follower.health,
                               {"/-/retrain": follower.webhook})

    def post(payload: dict) -> dict:
        req = Request(f"http://127.0.0.1:{server.port}/-/retrain",
                      data=json.dumps(payload).encode(), method="POST")
        with urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    try:
        ignored = post({"alerts": [{"status": "firing", "labels": {"alertname": "NoMessages"}}]})
        assert ignored == {"queued": False, "alerts": []}
        queued = post({"alerts": [{"status": "firing",
                                   "labels": {"alertname": "DriftDetected"}}]})
        assert queued == {"queued": True, "alerts": ["DriftDetected"]}
        outcomes = follower.run(timeout_s=60, max_rounds=1)
    finally:
        server.shutdown()
    assert [(o.trigger, o.status) for o in outcomes] == [("webhook", "promoted")]
