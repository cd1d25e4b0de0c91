"""Deploy files and dashboards: they parse, agree with each other, and only name metrics,
CLI options and paths that exist. Docker and Kubernetes do not run here; this is what can be
checked without them (promtool and amtool do run)."""

from __future__ import annotations

import configparser
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from distill.cli import main as cli
from distill.config import Config, load_config
from distill.metrics import MonitorMetrics, TrainerMetrics, metric_names

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
JOBS = {"distill-monitor", "distill-trainer"}  # the job names rules and dashboards expect
PROMQL_BUILTINS = {"ALERTS", "up"}


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@cache
def cli_help(sub: str) -> str:
    res = CliRunner().invoke(cli, [sub, "--help"])
    assert res.exit_code == 0, f"distill {sub} --help: {res.output}"
    return res.output


def assert_cli_args(argv: list[str], where: str) -> None:
    """``argv`` after ``distill``: the subcommand exists and every --flag is one of its options."""
    help_text = cli_help(argv[0])
    for word in argv[1:]:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            assert re.search(rf"(^|[\s,/]){re.escape(flag)}\b", help_text), f"{where}: {flag}"


def yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_docs() -> list[dict[str, Any]]:
    return [d for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in yaml_docs(p)]


def known_metrics() -> set[str]:
    """Every name the monitor and trainer expose, the bank collector's included."""
    entry = {"n": 1, "estimate": 1.0, "window_size": 1, "statistic": 0.1, "threshold": 1.0,
             "detections": 0, "detector": "adwin"}
    reg = CollectorRegistry()
    MonitorMetrics(reg).attach_bank(lambda: {"t": {"length": entry}}, lambda: {"t": 0.0})
    TrainerMetrics(reg)
    return metric_names(reg)


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(distill_[a-z0-9_]+|ALERTS|up)\b(?=\s*[{\[)\s,]|$)", expr))


# -- YAML, config --------------------------------------------------------------------------

def test_every_yaml_file_parses():
    files = [*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml"),
             *(ROOT / "dashboards/provisioning").glob("*.yml")]
    assert len(files) >= 14
    for path in files:
        assert yaml_docs(path), path


def test_example_configs_validate(tmp_path: Path):
    assert isinstance(load_config(DEPLOY / "distill.toml", env={}), Config)
    cm = next(d for d in k8s_docs() if d["kind"] == "ConfigMap")
    path = tmp_path / "distill.toml"
    path.write_text(cm["data"]["distill.toml"])
    cfg = load_config(path, env={})
    assert isinstance(cfg, Config), str(cfg)
    assert cfg.serve.metrics_address.startswith("0.0.0.0:")  # reachable by the scraper


# -- Prometheus, Alertmanager ----------------------------------------------------------------

def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_prometheus_configs_pass_promtool(tmp_path: Path):
    res = _run("promtool", "check", "config", str(DEPLOY / "prometheus/prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    # the compose config expects the rules mounted next to it
    shutil.copy(DEPLOY / "docker/prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(DEPLOY / "prometheus/rules", tmp_path / "rules")
    res = _run("promtool", "check", "config", str(tmp_path / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    for path in (DEPLOY / "prometheus/prometheus.yml", DEPLOY / "docker/prometheus.yml"):
        jobs = {j["job_name"] for j in yaml.safe_load(path.read_text())["scrape_configs"]}
        assert jobs >= JOBS, path


def test_alertmanager_config_passes_amtool():
    res = _run("amtool", "check-config", str(DEPLOY / "alertmanager/alertmanager.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = yaml.safe_load((DEPLOY / "alertmanager/alertmanager.yml").read_text())
    hooks = [h for r in cfg["receivers"] for h in r.get("webhook_configs", [])]
    assert hooks and all(h["url"].startswith("http") for h in hooks)


# -- systemd ---------------------------------------------------------------------------------

def _unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(path.read_text())
    return cp


@pytest.mark.parametrize("name,sub", [("distill-serve.service", "serve"),
                                      ("distill-train.service", "train")])
def test_systemd_units_run_real_commands(name: str, sub: str, tmp_path: Path):
    path = DEPLOY / "systemd" / name
    unit = _unit(path)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0].endswith("/distill") and argv[1] == sub
    assert_cli_args(argv[1:], name)
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    if shutil.which("systemd-analyze"):  # verify the unit too where systemd tools exist
        exe = shutil.which("distill") or str(ROOT / ".venv/bin/distill")
        local = tmp_path / name
        local.write_text(path.read_text().replace(argv[0], exe))
        res = _run("systemd-analyze", "verify", str(local))
        assert res.returncode == 0 and "Unknown" not in res.stderr, res.stderr


# -- Docker ------------------------------------------------------------------------------------

def test_dockerfile_has_cpu_and_cuda_bases_and_copies_what_exists():
    text = (DEPLOY / "docker/Dockerfile").read_text()
    assert re.search(r"^ARG BASE=cpu$", text, re.M)
    assert re.search(r"^FROM \S+ AS base-cpu$", text, re.M)
    assert re.search(r"^FROM nvidia/cuda:\S+ AS base-cuda$", text, re.M)
    assert "FROM base-${BASE}" in text
    for src in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for item in src.split():
            assert (ROOT / item).exists(), item
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert_cli_args(cmd, "Dockerfile CMD")


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


COMPOSE_TOP = {"name", "services", "volumes", "networks", "configs", "secrets"}
COMPOSE_SERVICE = {"image", "build", "command", "entrypoint", "environment", "env_file",
                   "volumes", "ports", "depends_on", "healthcheck", "restart", "profiles",
                   "stop_grace_period", "deploy", "user", "working_dir", "networks"}


def test_compose_uses_only_compose_spec_keys():
    doc = compose()
    assert {k for k in doc if not k.startswith("x-")} <= COMPOSE_TOP
    for name, svc in doc["services"].items():
        assert set(svc) <= COMPOSE_SERVICE, (name, set(svc) - COMPOSE_SERVICE)
        deps = svc.get("depends_on") or {}
        for dep, cond in (deps.items() if isinstance(deps, dict) else []):
            assert cond["condition"] in {"service_started", "service_healthy",
                                         "service_completed_successfully"}, (name, dep)
        if "healthcheck" in svc:
            assert svc["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_compose_services_reference_what_exists():
    doc = compose()
    services = doc["services"]
    assert {"kafka", "serve", "train", "prometheus", "grafana"} <= set(services)
    assert "KRaft" in (DEPLOY / "docker-compose.yml").read_text()
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep in svc.get("depends_on", []):
            assert dep in services, (name, dep)
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), (name, src)
            else:
                assert src in doc["volumes"], (name, src)
        if "build" in svc:
            assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()


def test_compose_runs_real_distill_commands_reachable_by_prometheus():
    services = compose()["services"]
    for name in ("serve", "train", "simulate"):
        argv = [str(a) for a in services[name]["command"]]
        assert_cli_args(argv, f"compose {name}")
    for name, port in (("serve", "9108"), ("train", "9109")):
        argv = [str(a) for a in services[name]["command"]]
        assert argv[argv.index("--metrics-address") + 1] == f"0.0.0.0:{port}"
    targets = {t for j in yaml.safe_load((DEPLOY / "docker/prometheus.yml").read_text())
               ["scrape_configs"] for sc in j["static_configs"] for t in sc["targets"]}
    assert {"serve:9108", "train:9109"} <= targets


def test_compose_provisions_grafana_with_the_dashboards():
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts["../dashboards"] == path
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "dashboards" / Path(home).name).exists()
    ds = yaml.safe_load((ROOT / "dashboards/provisioning/datasources.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


# -- Kubernetes --------------------------------------------------------------------------------

def test_k8s_documents_have_kind_api_version_and_name():
    docs = k8s_docs()
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceMonitor", "PrometheusRule", "ConfigMap",
            "PersistentVolumeClaim", "Job"} <= kinds
    for d in docs:
        assert d["apiVersion"] and d["kind"], d
        assert d["metadata"].get("name") or d["metadata"].get("generateName"), d
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert all((K8S / r).exists() for r in kust["resources"])


def test_k8s_workloads_are_consistent():
    docs = k8s_docs()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == JOBS | {"distill-monitor-detect"}  # the monitor's two roles
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        for c in dep["spec"]["template"]["spec"]["containers"]:
            assert_cli_args(c["args"], f"k8s {name}")
            ports = {p["name"] for p in c["ports"]}
            assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["port"] in ports
    train = deployments["distill-trainer"]["spec"]["template"]["spec"]["containers"][0]
    assert train["resources"]["limits"]["nvidia.com/gpu"] == 1
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert set(services) == JOBS  # Prometheus Operator: job label = Service name
    for name, svc in services.items():
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()
    sm = next(d for d in docs if d["kind"] == "ServiceMonitor")
    for svc in services.values():
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    job = next(d for d in docs if d["kind"] == "Job")
    assert_cli_args(job["spec"]["template"]["spec"]["containers"][0]["args"], "k8s Job")


def test_prometheusrule_carries_the_same_rules():
    rule = next(d for d in k8s_docs() if d["kind"] == "PrometheusRule")
    groups = yaml.safe_load((DEPLOY / "prometheus/rules/distill.rules.yml").read_text())["groups"]
    assert rule["spec"]["groups"] == groups


# -- dashboards ----------------------------------------------------------------------------------

def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted((ROOT / "dashboards").glob("*.json"))}


def test_dashboards_are_generated_and_up_to_date():
    build = _load("dashboards_build", ROOT / "dashboards/build.py")
    assert set(dashboards()) == set(build.BOARDS)
    stale = [p.name for p, text in build.outputs().items() if p.read_text() != text]
    assert not stale, f"run `python dashboards/build.py`: {stale}"


def test_dashboards_have_unique_uids_and_use_the_datasource_variable():
    boards = dashboards()
    assert len({b["uid"] for b in boards.values()}) == len(boards) == 3
    for name, b in boards.items():
        assert b["templating"]["list"][0]["type"] == "datasource"
        for p in b["panels"]:
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, (name, p["title"])
            for t in p.get("targets", []):
                assert t["datasource"]["uid"] == "${datasource}", (name, p["title"])
    teacher = boards["teacher-drift.json"]
    assert "teacher" in {v["name"] for v in teacher["templating"]["list"]}
    assert any(a.get("expr") for a in teacher["annotations"]["list"])


def test_dashboard_queries_reference_only_metrics_that_exist():
    build = _load("dashboards_build", ROOT / "dashboards/build.py")
    known = known_metrics() | PROMQL_BUILTINS
    count = 0
    for name, board in dashboards().items():
        for where, expr in build.queries(board):
            used = metrics_in(expr)
            assert used, (name, where, expr)
            assert used <= known, (name, where, used - known)
            count += 1
    assert count >= 40


def test_metric_check_catches_an_unknown_name():
    assert metrics_in("sum(rate(distill_mesages_consumed_total[5m]))") - known_metrics()
