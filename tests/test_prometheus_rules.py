"""The alert rules: promtool accepts them, their unit tests pass, and they would catch a bug."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import yaml
from prometheus_client import CollectorRegistry

from distill.metrics import MonitorMetrics, TrainerMetrics, metric_names

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy/prometheus/rules/distill.rules.yml"
RULE_TESTS_DIR = ROOT / "deploy/prometheus/tests"
PROMTOOL = shutil.which("promtool") or "promtool (missing: apt-get install prometheus)"
REQUIRED_ALERTS = {"DriftDetected", "DriftSustained", "SeveralTeachersDrifting", "DetectorStalled",
                   "NoMessages", "DeadLetterGrowing", "ConsumerLag", "RetrainFailing",
                   "RetrainStale", "StudentRegressed"}


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_build", ROOT / "deploy/build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"]}


def test_promtool_check_rules_accepts_the_rules_file():
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in res.stdout


def rule_test_files(folder: Path = RULE_TESTS_DIR) -> list[str]:
    return sorted(p.name for p in folder.glob("*.test.yml"))


def test_promtool_rule_unit_tests_pass():
    files = rule_test_files()
    assert len(files) == 2
    res = promtool("test", "rules", *files, cwd=RULE_TESTS_DIR)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(files)


def test_generated_files_are_up_to_date():
    build = load_build()
    stale = [str(p) for p, text in build.outputs().items() if p.read_text() != text]
    assert not stale, f"run `python deploy/build.py`: {stale}"


def test_required_alerts_exist_with_summary_description_and_runbook():
    rules = alerts()
    assert set(rules) >= REQUIRED_ALERTS, REQUIRED_ALERTS - set(rules)
    for name, rule in rules.items():
        ann = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(ann), name
        assert "`distill " in ann["runbook"] or "`systemctl" in ann["runbook"], name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["labels"]["service"] == "drift-distill", name


def test_runbooks_name_commands_and_flags_that_exist():
    from click.testing import CliRunner

    from distill.cli import main

    for name, rule in alerts().items():
        for cmd in re.findall(r"`(distill [^`]+)`", rule["annotations"]["runbook"]):
            words = cmd.split()
            flags = [w for w in words if w.startswith("--")]
            res = CliRunner().invoke(main, [words[1], "--help"])
            assert res.exit_code == 0, (name, cmd, res.output)
            for flag in flags:
                assert flag in res.output, f"{name}: `{cmd}` but {flag} is not an option"


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    build = load_build()
    firing: set[str] = set()
    silent: set[str] = set()
    for _, _, _, cases in build.CASES:
        for _, alertname, expected in cases:
            (firing if expected else silent).add(alertname)
    assert set(alerts()) <= firing, set(alerts()) - firing
    assert set(alerts()) <= silent, set(alerts()) - silent


def test_rules_only_use_metrics_that_exist():
    entry = {"n": 1, "estimate": 1.0, "window_size": 1, "statistic": 0.1, "threshold": 1.0,
             "detections": 0, "detector": "adwin"}
    reg = CollectorRegistry()
    MonitorMetrics(reg).attach_bank(lambda: {"t": {"length": entry}}, lambda: {"t": 0.0})
    TrainerMetrics(reg)
    known = metric_names(reg) | {"up"}
    for name, rule in alerts().items():
        used = set(re.findall(r"\b(distill_[a-z0-9_]+|up)\b", rule["expr"]))
        assert used <= known, (name, used - known)


def test_unit_tests_catch_a_broken_rule(tmp_path: Path):
    """Mutation check: loosen DriftDetected and the promtool tests must fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    broken = RULES.read_text().replace(
        "sum by (teacher, signal) (increase(distill_drift_detections_total[5m])) > 0",
        "sum by (teacher, signal) (increase(distill_drift_detections_total[5m])) >= 0")
    assert broken != RULES.read_text()
    (tmp_path / "rules" / RULES.name).write_text(broken)
    for name in rule_test_files():
        shutil.copy(RULE_TESTS_DIR / name, tmp_path / "tests" / name)
    res = promtool("test", "rules", *rule_test_files(), cwd=tmp_path / "tests")
    assert res.returncode != 0
    assert "alertname: DriftDetected" in res.stdout + res.stderr
