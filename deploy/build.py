"""Generate the files that must follow deploy/prometheus/rules/distill.rules.yml.

- deploy/k8s/prometheusrule.yaml: the same groups wrapped in a Prometheus Operator
  PrometheusRule, so Kubernetes and plain Prometheus alert alike;
- deploy/prometheus/tests/distill.rules*.test.yml: the ``promtool test rules`` cases below,
  with each expected alert's annotations rendered from the rule's own templates (promtool
  compares annotations verbatim, so hand-copied text would drift from the rules).

Run ``python deploy/build.py`` after editing the rules; ``--check`` exits 1 when a committed
file is stale (the test suite runs it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
RULES = DEPLOY / "prometheus" / "rules" / "distill.rules.yml"
RULE_TESTS = {"1m": DEPLOY / "prometheus" / "tests" / "distill.rules.test.yml",
              "1h": DEPLOY / "prometheus" / "tests" / "distill.rules.hourly.test.yml"}
PROMETHEUS_RULE = DEPLOY / "k8s" / "prometheusrule.yaml"

M = 'job="distill-monitor",instance="monitor:9108"'
T = 'job="distill-trainer",instance="trainer:9109"'
DRIFT = "distill_drift_detections_total"


def alert(name: str, value: str = "", **labels: str) -> dict[str, Any]:
    """An expected firing alert; ``value`` is how promtool renders ``$value`` in it."""
    return {"alertname": name, "value": value, "labels": labels}


# Each group: (name, interval, input series, [(eval_time, alertname, [expected alerts])]).
# Every alert has at least one firing case and one silent case (an empty list).
CASES: list[tuple[str, str, list[tuple[str, str]], list[tuple[str, str, list[dict]]]]] = [
    ("drift detections", "1m", [
        (f'{DRIFT}{{{M},teacher="grok-4",signal="length",detector="adwin"}}',
         "0 0 0 1 1 1 2 2 2 3+0x40"),
        (f'{DRIFT}{{{M},teacher="moonshot",signal="refusal",detector="adwin"}}',
         "0x10 1+0x40"),
        (f'{DRIFT}{{{M},teacher="gpt-5",signal="length",detector="adwin"}}', "0+0x50"),
    ], [
        ("2m", "DriftDetected", []),
        ("4m", "DriftDetected", [alert("DriftDetected", "1", teacher="grok-4", signal="length")]),
        ("12m", "DriftDetected", [
            alert("DriftDetected", "1", teacher="grok-4", signal="length"),
            alert("DriftDetected", "1", teacher="moonshot", signal="refusal")]),
        ("40m", "DriftDetected", []),
        ("20m", "DriftSustained", []),  # pending since 9m, fires at 24m
        ("25m", "DriftSustained", [alert("DriftSustained", "3", teacher="grok-4")]),
        ("4m", "SeveralTeachersDrifting", []),
        ("12m", "SeveralTeachersDrifting", [alert("SeveralTeachersDrifting", "2")]),
        ("40m", "SeveralTeachersDrifting", []),
    ]),
    ("targets down", "1m", [
        ('up{job="distill-monitor",instance="monitor:9108"}', "1x10 0x20"),
        ('up{job="distill-trainer",instance="trainer:9109"}', "1x30"),
        ('up{job="node",instance="node:9100"}', "0x30"),
    ], [
        ("12m", "DistillTargetDown", []),
        ("14m", "DistillTargetDown", [alert("DistillTargetDown", "0", job="distill-monitor",
                                            instance="monitor:9108")]),
    ]),
    ("no messages", "1m", [
        (f"distill_messages_consumed_total{{{M}}}", "0+100x10 1000+0x40"),
    ], [
        ("5m", "NoMessages", []),
        ("29m", "NoMessages", []),
        ("31m", "NoMessages", [alert("NoMessages", "0")]),
    ]),
    ("teacher silent", "1m", [
        (f'distill_teacher_events_total{{{M},teacher="gpt-5"}}', "0+10x40"),
        (f'distill_teacher_events_total{{{M},teacher="moonshot"}}', "0+10x10 100+0x30"),
    ], [
        ("20m", "TeacherSilent", []),
        ("31m", "TeacherSilent", [alert("TeacherSilent", "0", teacher="moonshot")]),
    ]),
    ("detector stalled", "1m", [
        (f'distill_teacher_events_total{{{M},teacher="gpt-5"}}', "0+10x40"),
        (f'distill_teacher_events_total{{{M},teacher="grok-4"}}', "0+10x40"),
        (f'distill_detector_observations_total{{{M},teacher="gpt-5",signal="length",'
         'detector="adwin"}', "0+10x40"),
        (f'distill_detector_observations_total{{{M},teacher="grok-4",signal="length",'
         'detector="adwin"}', "0+10x10 100+0x30"),
    ], [
        ("20m", "DetectorStalled", []),
        ("31m", "DetectorStalled", [alert("DetectorStalled", "150", teacher="grok-4")]),
    ]),
    ("dead letters", "1m", [
        (f"distill_messages_consumed_total{{{M}}}", "0+1000x40"),
        (f'distill_messages_dead_lettered_total{{{M},reason="not_json"}}', "0x10 0+20x30"),
        (f'distill_messages_dead_lettered_total{{{M},reason="too_large"}}', "0x40"),
    ], [
        ("5m", "DeadLetterGrowing", []),
        ("35m", "DeadLetterGrowing", [alert("DeadLetterGrowing", "333.3m", reason="not_json")]),
    ]),
    ("consumer lag", "1m", [
        (f'distill_consumer_lag_messages{{{M},partition="0"}}', "0+1000x40"),
        (f'distill_consumer_lag_messages{{{M},partition="1"}}', "500x40"),
    ], [
        ("9m", "ConsumerLag", []),
        ("26m", "ConsumerLag", [alert("ConsumerLag", "26.5k")]),
    ]),
    ("broker", "1m", [
        (f"distill_broker_up{{{M}}}", "1x5 0x10 1x10"),
    ], [
        ("7m", "BrokerUnreachable", []),
        ("9m", "BrokerUnreachable", [alert("BrokerUnreachable", "0", job="distill-monitor",
                                           instance="monitor:9108")]),
        ("20m", "BrokerUnreachable", []),
    ]),
    ("checkpoints", "1m", [
        (f"distill_checkpoint_timestamp_seconds{{{M}}}", "0+60x10 600+0x40"),
        (f"distill_messages_consumed_total{{{M}}}", "0+100x50"),
        # an idle instance with an old checkpoint is fine: nothing to checkpoint
        ('distill_checkpoint_timestamp_seconds{job="distill-monitor",instance="idle:9108"}',
         "0x50"),
        ('distill_messages_consumed_total{job="distill-monitor",instance="idle:9108"}', "5x50"),
    ], [
        ("15m", "CheckpointStale", []),
        ("27m", "CheckpointStale", [alert("CheckpointStale", "17m 0s", job="distill-monitor",
                                          instance="monitor:9108")]),
    ]),
    ("retrain failing", "1m", [
        (f'distill_retrain_runs_total{{{T},trigger="interval",status="failed"}}',
         "0x10 1+0x5 2+0x30"),
        (f'distill_retrain_runs_total{{{T},trigger="interval",status="promoted"}}', "0x50"),
        (f'distill_retrain_runs_total{{{T},trigger="interval",status="kept"}}', "0x50"),
    ], [
        ("5m", "RetrainFailing", []),
        ("12m", "RetrainFailing", [alert("RetrainFailing", "1")]),
    ]),
    ("retrain recovers", "1m", [
        (f'distill_retrain_runs_total{{{T},trigger="interval",status="failed"}}', "0x10 1+0x40"),
        (f'distill_retrain_runs_total{{{T},trigger="alert",status="promoted"}}', "0x20 1+0x30"),
    ], [
        ("15m", "RetrainFailing", [alert("RetrainFailing", "1")]),
        ("25m", "RetrainFailing", []),  # a later round finished
    ]),
    ("retrain stale", "1h", [
        (f"distill_retrain_last_success_timestamp_seconds{{{T}}}", "3600x30"),
    ], [
        ("24h", "RetrainStale", []),
        ("26h", "RetrainStale", [alert("RetrainStale", "1d 1h 0m 0s")]),
    ]),
    ("never trained", "1h", [
        (f"distill_retrain_last_success_timestamp_seconds{{{T}}}", "0x30"),
    ], [
        ("26h", "RetrainStale", []),  # a fresh trainer is not "stale"
    ]),
    ("student regressed", "1m", [
        (f'distill_student_eval_score{{{T},metric="accuracy"}}', "0.8x20 0.7x20"),
        (f'distill_student_eval_score{{{T},metric="f1"}}', "0.6x40"),
    ], [
        ("25m", "StudentRegressed", []),
        ("32m", "StudentRegressed", [alert("StudentRegressed", "0.700", metric="accuracy")]),
    ]),
]

_TEMPLATE = re.compile(r"\{\{\s*(\$labels\.(\w+)|[^}]*\$value[^}]*)\s*\}\}")


def load_rules() -> dict[str, dict[str, Any]]:
    """alertname -> rule dict, from the rules file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def _render(text: str, labels: dict[str, str], value: str) -> str:
    def sub(m: re.Match[str]) -> str:
        return labels[m.group(2)] if m.group(2) else value

    return _TEMPLATE.sub(sub, text)


def rule_tests(evaluation_interval: str) -> dict[str, Any]:
    """The promtool test file for the CASES sampled every ``evaluation_interval`` (rules are
    evaluated that often until the last eval_time, so day-long cases get their own file)."""
    rules = load_rules()
    tests = []
    for name, interval, series, cases in CASES:
        if interval != evaluation_interval:
            continue
        alert_tests = []
        for eval_time, alertname, expected in cases:
            exp = []
            for e in expected:
                rule = rules[e["alertname"]]
                labels = {**rule.get("labels", {}), **e["labels"]}
                exp.append({"exp_labels": labels, "exp_annotations": {
                    k: _render(v, labels, e["value"]) for k, v in rule["annotations"].items()}})
            alert_tests.append({"eval_time": eval_time, "alertname": alertname, "exp_alerts": exp})
        tests.append({"name": name, "interval": interval,
                      "input_series": [{"series": s, "values": v} for s, v in series],
                      "alert_rule_test": alert_tests})
    return {"rule_files": ["../rules/distill.rules.yml"],
            "evaluation_interval": evaluation_interval, "tests": tests}


def prometheus_rule() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "drift-distill", "labels": {
            "app.kubernetes.io/name": "drift-distill",
            # match your Prometheus' ruleSelector (kube-prometheus-stack: release=<name>)
            "release": "prometheus"}},
        "spec": {"groups": yaml.safe_load(RULES.read_text())["groups"]},
    }


def _dump(doc: dict[str, Any], header: str) -> str:
    body = yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)
    return f"# GENERATED by deploy/build.py from {header}; do not edit.\n{body}"


def outputs() -> dict[Path, str]:
    return {
        **{path: _dump(rule_tests(every), "its CASES and prometheus/rules/distill.rules.yml")
           for every, path in RULE_TESTS.items()},
        PROMETHEUS_RULE: _dump(prometheus_rule(), "prometheus/rules/distill.rules.yml"),
    }


def main(argv: list[str]) -> int:
    stale = [p for p, text in outputs().items() if not p.exists() or p.read_text() != text]
    if "--check" in argv:
        for p in stale:
            print(f"stale: {p.relative_to(DEPLOY.parent)} (run python deploy/build.py)")
        return 1 if stale else 0
    for p, text in outputs().items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
