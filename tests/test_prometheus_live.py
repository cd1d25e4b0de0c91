"""The live proof: a real Prometheus scrapes a real `distill serve` (fed by the simulator's
default drift scenario plus some malformed messages) and a real `distill train --follow`
that runs one tiny APO round; then every dashboard query and every alert expression is
evaluated through Prometheus' HTTP API, and DriftDetected must fire for the drifting teachers.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
import yaml
from serving import Topics, produce_raw

from stream.broker import free_port, wait_for_port
from stream.kafka import KafkaSettings
from stream.simulator import Scenario, generate, load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy/prometheus/rules/distill.rules.yml"
SAMPLES = 420  # the default scenario made short, drifts from sample 330 (see live_scenario)
TEACHERS = 7
BAD = [b"{not json", b"", b"[1, 2]", b'{"event_id": "x"}', b'{"event_id": 7}'] * 4
DRIFT_START = 330  # the first scheduled drift of the shortened scenario (sample index)
DRIFTING = {"grok-4", "moonshot"}  # verbosity x3 and 40% refusals: both must be caught
FAST_ROUND = ["--steps", "2", "--max-new-groups", "16", "--replay-fraction", "0",
              "--apo", "max_length=160", "--apo", "max_prompt_length=80",
              "--apo", "synthesis_max_new_tokens=8", "--apo", "bootstrap_max_steps=1"]

# The data behind each alert: its expression without the threshold, which must return
# samples on a live stack even when the alert (rightly) does not fire.
ALERT_SIGNALS = {
    "DriftDetected": "sum by (teacher, signal) (increase(distill_drift_detections_total[5m]))",
    "DriftSustained": "sum by (teacher) (increase(distill_drift_detections_total[1h]))",
    "SeveralTeachersDrifting": "sum by (teacher) (increase(distill_drift_detections_total[15m]))",
    "DistillTargetDown": 'up{job=~"distill-.*"}',
    "NoMessages": "sum(rate(distill_messages_consumed_total[10m]))",
    "TeacherSilent": "sum by (teacher) (increase(distill_teacher_events_total[15m]))",
    "DetectorStalled":
        "sum by (teacher) (increase(distill_detector_observations_total[15m]))",
    "DeadLetterGrowing": "sum by (reason) (rate(distill_messages_dead_lettered_total[10m]))",
    "ConsumerLag": "sum(max by (partition) (distill_consumer_lag_messages))",
    "BrokerUnreachable": "distill_broker_up",
    "CheckpointStale": "time() - distill_checkpoint_timestamp_seconds",
    "RetrainFailing": "sum by (status) (increase(distill_retrain_runs_total[6h]))",
    "RetrainStale": "time() - max(distill_retrain_last_success_timestamp_seconds)",
    "StudentRegressed": "max by (metric) (distill_student_eval_score)",
}

pytestmark = [pytest.mark.broker, pytest.mark.train, pytest.mark.slow]


def live_scenario() -> Scenario:
    """The default scenario (seven teachers, four scheduled drifts) made short: detectors need
    ~300 events of reference per teacher, so the drifts start at sample 330 instead of 800."""
    data = load_scenario("default").model_dump(mode="json")
    data["samples"] = SAMPLES
    for d in data["drift"]:
        d["at"] = DRIFT_START + (d["at"] - 800) // 10
    return scenario_from_dict(data)


def _load_dashboards_build() -> Any:
    spec = importlib.util.spec_from_file_location("dashboards_build",
                                                  ROOT / "dashboards/build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@dataclass
class Prometheus:
    url: str

    def get(self, path: str, **params: str) -> Any:
        with urlopen(f"{self.url}{path}?{urlencode(params)}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else float("nan")

    def firing(self, alertname: str) -> list[dict[str, str]]:
        return [a["labels"] for a in self.get("/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


@dataclass
class Stack:
    prom: Prometheus
    serve_port: int
    train_port: int
    events: int
    started: float
    timings: dict[str, float] = field(default_factory=dict)


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def _distill(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return _spawn([sys.executable, "-c", "from distill.cli import main; main()", *args],
                  log, env)


def _wait(what: str, check: Callable[[], bool], timeout: float, procs: list[Any],
          logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for p in procs:
            assert p.poll() is None, f"a process died while waiting for {what}: " + _tails(logs)
        time.sleep(0.25)  # polling Prometheus; there is no event to wait on
    pytest.fail(f"timed out waiting for {what}: " + _tails(logs))


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
                     for p in logs if p.exists())


def _prometheus_config(path: Path, serve_port: int, train_port: int) -> Path:
    path.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "distill-monitor",
             "static_configs": [{"targets": [f"127.0.0.1:{serve_port}"]}]},
            {"job_name": "distill-trainer",
             "static_configs": [{"targets": [f"127.0.0.1:{train_port}"]}]},
        ]}))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, bootstrap_servers: str) -> Iterator[Stack]:
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("live")
    state = tmp / "state"
    topics = Topics.fresh()
    env = {**topics.env(bootstrap_servers, state), "DISTILL_KAFKA__PARTITIONS": "1",
           "DISTILL_TRAIN__GROUP_ID": f"{topics.group_id}-trainer",
           "DISTILL_TRAIN__PROBE_FRACTION": "0.015",
           "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    logs = [tmp / "prometheus.log", tmp / "serve.log", tmp / "init-tiny.log", tmp / "train.log"]
    procs: list[subprocess.Popen[bytes]] = []

    # the tiny student builds while the rest starts (it imports torch)
    tiny = tmp / "tiny"
    init = _distill(["train", "--init-tiny", str(tiny)], env, logs[2])

    serve_port, train_port, prom_port = free_port(), free_port(), free_port()
    prom_bin = shutil.which("prometheus") or "prometheus"
    procs.append(_spawn(
        [prom_bin, f"--config.file={_prometheus_config(tmp / 'prom.yml', serve_port, train_port)}",
         f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
         "--log.level=warn"], logs[0]))
    procs.append(_distill(["serve", "--state-dir", str(state),
                           "--metrics-address", f"127.0.0.1:{serve_port}"], env, logs[1]))
    prom = Prometheus(f"http://127.0.0.1:{prom_port}")
    s = Stack(prom, serve_port, train_port, SAMPLES * TEACHERS + len(BAD), started)
    try:
        # produced while serve and Prometheus boot; serve consumes as the events arrive
        settings = KafkaSettings(bootstrap_servers=bootstrap_servers)
        events = [(e.sample_id.encode(), e.to_json_bytes())
                  for e in generate(live_scenario(), seed=0)]
        assert len(events) == SAMPLES * TEACHERS
        # The pre-drift part first: Prometheus must scrape the detection counters at 0
        # before any detection, or increase() has no earlier sample to compare with.
        pre_drift = DRIFT_START * TEACHERS
        produce_raw(settings, topics.input, events[:pre_drift])
        assert wait_for_port("127.0.0.1", prom_port, 30), _tails(logs)
        _wait("Prometheus to scrape the pre-drift part", lambda: prom.value(
            "sum(distill_messages_consumed_total)") == pre_drift, 60, procs, logs)
        produce_raw(settings, topics.input, events[pre_drift:])
        produce_raw(settings, topics.input, ((b"bad", v) for v in BAD))
        s.timings["produced"] = time.monotonic() - started
        assert init.wait(timeout=180) == 0, _tails(logs)  # a hang guard: it imports torch
        s.timings["student_built"] = time.monotonic() - started
        procs.append(_distill(
            ["train", "--follow", "--state-dir", str(state), "--student", str(tiny),
             "--metrics-address", f"127.0.0.1:{train_port}", "--trigger-every-groups", "100000",
             "--trigger-on-alert", *FAST_ROUND], env, logs[3]))
        _wait("serve to consume every message", lambda: prom.value(
            "sum(distill_messages_consumed_total)") == s.events, 60, procs, logs)
        s.timings["serve_done"] = time.monotonic() - started
        _wait("a finished retrain round", lambda: prom.value(
            'sum(distill_retrain_runs_total{status=~"promoted|kept"})') >= 1, 75, procs, logs)
        s.timings["round_done"] = time.monotonic() - started
        _wait("DriftDetected for the drifting teachers", lambda: {
            a["teacher"] for a in prom.firing("DriftDetected")} >= DRIFTING, 20, procs, logs)
        s.timings["alert_firing"] = time.monotonic() - started
        yield s
    finally:
        if len(procs) == 3:
            procs[2].kill()  # the trainer may be mid-round; its registry survives kill -9
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if init.poll() is None:
            init.kill()
        print("live stack timings (s):", {k: round(v, 1) for k, v in s.timings.items()})


def _substitute(expr: str, window: str, variables: dict[str, str]) -> str:
    for name in ("$__rate_interval", "$__interval", "$__range"):
        expr = expr.replace(name, window)
    for name, value in variables.items():
        expr = expr.replace(f"${name}", value)
    return expr


def _variables(prom: Prometheus, board: dict[str, Any]) -> dict[str, str]:
    """Each template variable as Grafana's "All" would send it: (v1|v2|...)."""
    values: dict[str, str] = {}
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            metric, label = var["definition"][len("label_values("):-1].split(", ")
            found = prom.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
            assert found, f"variable {var['name']}: no values for {var['definition']}"
            values[var["name"]] = "(" + "|".join(found) + ")"
        elif var["type"] == "custom":
            values[var["name"]] = "(" + "|".join(var["query"].split(",")) + ")"
    return values


def test_every_dashboard_query_returns_data(stack: Stack):
    build = _load_dashboards_build()
    window = f"{int(time.monotonic() - stack.started) + 30}s"
    checked = 0
    empty = []
    for name, board in build.BOARDS.items():
        board_json = board()
        variables = _variables(stack.prom, board_json)
        for where, expr in build.queries(board_json):
            if where.startswith("variable"):
                continue  # evaluated by _variables
            result = stack.prom.query(_substitute(expr, window, variables))
            checked += 1
            if not result:
                empty.append(f"{name} {where}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    assert checked >= 40


def test_rules_load_and_every_alert_expression_evaluates(stack: Stack):
    groups = stack.prom.get("/api/v1/rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    expected = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"]
                for r in g["rules"]}
    assert set(rules) == expected == set(ALERT_SIGNALS)
    _wait("every rule evaluated once", lambda: all(
        r["health"] == "ok" for g in stack.prom.get("/api/v1/rules")["groups"]
        for r in g["rules"]), 10, [], [])
    for name, rule in rules.items():
        assert not rule.get("lastError"), (name, rule["lastError"])
        stack.prom.query(rule["query"])  # parses and evaluates (assert inside)
        assert stack.prom.query(ALERT_SIGNALS[name]), f"{name}: no data behind the alert"


def test_drift_detected_fires_for_the_drifting_teachers(stack: Stack):
    firing = stack.prom.firing("DriftDetected")
    teachers = {a["teacher"] for a in firing}
    assert teachers >= DRIFTING
    for alert in firing:
        assert alert["severity"] == "warning" and alert["service"] == "drift-distill"
    assert stack.prom.firing("SeveralTeachersDrifting")
    print("DriftDetected firing:", sorted((a["teacher"], a["signal"]) for a in firing))
    # the same alerts as the monitor's own counters say
    detected = {r["metric"]["teacher"] for r in stack.prom.query(
        "sum by (teacher) (distill_drift_detections_total) > 0")}
    assert teachers <= detected


def test_the_drift_alert_triggered_a_real_retrain_round(stack: Stack):
    prom = stack.prom
    # the trainer's only enabled trigger is the alert (count and interval are out of reach)
    assert prom.value('sum(distill_retrain_runs_total{trigger="alert", '
                      'status=~"promoted|kept"})') >= 1
    assert prom.value("max(distill_student_version)") >= 2  # v0001 is the bootstrap reference
    assert prom.value("max(distill_train_loss)") > 0
    assert prom.value("sum(distill_preference_groups_built_total)") >= 1
    assert {r["metric"]["metric"] for r in prom.query("distill_student_eval_score")}
    assert prom.value("max(distill_retrain_last_success_timestamp_seconds)") > 0


def test_healthy_stack_fires_no_operational_alerts(stack: Stack):
    for name in ("DistillTargetDown", "BrokerUnreachable", "RetrainFailing", "NoMessages"):
        assert not stack.prom.firing(name), name
    for port in (stack.serve_port, stack.train_port):
        try:
            with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                assert resp.status == 200
        except HTTPError as err:
            pytest.fail(f"/healthz on {port}: {err.code} {err.read()!r} {stack.timings}")
    assert stack.prom.value('sum(distill_messages_dead_lettered_total)') == len(BAD)
    assert stack.prom.value("sum(distill_teacher_events_total)") == SAMPLES * TEACHERS
