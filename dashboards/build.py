"""Generate the Grafana dashboards (JSON, committed) from one small description.

Three boards: the overview (throughput, dead letters, lag, groups, alerts), the per-teacher
drift board (templated by teacher; signal estimates with drift annotations, statistic against
threshold, agreement) and the training board (rounds, loss, reward margin, eval score,
version). Every query goes through the ``datasource`` variable, so the JSON imports into any
Grafana with a Prometheus datasource; dashboards/provisioning/ wires it up automatically.

Run ``python dashboards/build.py`` after editing; ``--check`` exits 1 if the JSON is stale.
tests/test_prometheus_live.py evaluates every query here against a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from detectors.bank import JOINT_KEYS
from stream.signals import SIGNALS

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend,
                         "range": not instant, "instant": instant}
    if instant:
        t["format"] = "table"
    return t


class Board:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self, uid: str, title: str, description: str, tags: list[str]) -> None:
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.panels: list[dict[str, Any]] = []
        self.variables: list[dict[str, Any]] = [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "options": []}]
        self.annotations: list[dict[str, Any]] = [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]
        self._x = self._y = self._row_h = 0

    def query_var(self, name: str, query: str, label: str, multi: bool = True) -> None:
        self.variables.append({
            "name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"var-{name}"}, "definition": query,
            "refresh": 2, "multi": multi, "includeAll": multi, "sort": 1, "hide": 0,
            "current": {"text": "All", "value": "$__all"} if multi else {}, "options": []})

    def custom_var(self, name: str, values: tuple[str, ...], label: str) -> None:
        self.variables.append({
            "name": name, "label": label, "type": "custom", "query": ",".join(values),
            "multi": True, "includeAll": True, "hide": 0,
            "current": {"text": "All", "value": "$__all"},
            "options": [{"text": v, "value": v, "selected": False} for v in values]})

    def annotation(self, name: str, expr: str, title: str, color: str = "red") -> None:
        self.annotations.append({
            "name": name, "datasource": DS, "enable": True, "hide": False, "iconColor": color,
            "expr": expr, "step": "30s", "titleFormat": title, "tagKeys": "teacher,signal",
            "textFormat": "{{detector}}", "useValueForTime": False})

    def row(self, title: str) -> None:
        self._newline()
        self._add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)

    def panel(self, kind: str, title: str, targets: list[dict[str, Any]], w: int = 8, h: int = 8,
              unit: str = "short", description: str = "", **extra: Any) -> dict[str, Any]:
        refs = "ABCDEFGH"
        for i, t in enumerate(targets):
            t["refId"] = refs[i]
        p = {"type": kind, "title": title, "description": description, "datasource": DS,
             "targets": targets,
             "fieldConfig": {"defaults": {"unit": unit, **extra.pop("defaults", {})},
                             "overrides": extra.pop("overrides", [])},
             "options": _options(kind, extra.pop("options", {}))}
        p.update(extra)
        self._add(p, w, h)
        return p

    def _add(self, p: dict[str, Any], w: int, h: int) -> None:
        if self._x + w > 24:
            self._newline()
        p["id"] = len(self.panels) + 1
        p["gridPos"] = {"x": self._x, "y": self._y, "w": w, "h": h}
        self.panels.append(p)
        self._x += w
        self._row_h = max(self._row_h, h)

    def _newline(self) -> None:
        self._y += self._row_h
        self._x = self._row_h = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["drift-distill", *self.tags], "schemaVersion": SCHEMA_VERSION,
            "version": 1, "editable": True, "graphTooltip": 1, "timezone": "",
            "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
            "templating": {"list": self.variables},
            "annotations": {"list": self.annotations},
            "links": [{"title": "drift-distill", "type": "dashboards", "tags": ["drift-distill"],
                       "asDropdown": True, "includeVars": True, "keepTime": True}],
            "panels": self.panels,
        }


def _options(kind: str, extra: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "timeseries": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                       "tooltip": {"mode": "multi", "sort": "desc"}},
        "stat": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                 "colorMode": "value", "graphMode": "area", "textMode": "auto",
                 "justifyMode": "auto", "orientation": "auto"},
        "table": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
    }.get(kind, {})
    return {**base, **extra}


def _thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"thresholds": {"mode": "absolute",
                           "steps": [{"value": v, "color": c} for v, c in steps]}}


def overview() -> dict[str, Any]:
    b = Board("distill-overview", "drift-distill / overview",
              "The monitor at a glance: throughput, dead letters, lag, groups and alerts.",
              ["overview"])
    b.panel("stat", "Version", [target("max by (version) (distill_build_info)", "{{version}}")],
            w=4, h=4, options={"textMode": "name", "graphMode": "none"})
    b.panel("stat", "Broker", [target("min(distill_broker_up)")], w=4, h=4,
            description="1 when every monitor reaches Kafka.",
            defaults={"mappings": [{"type": "value", "options": {
                "0": {"text": "DOWN", "color": "red"}, "1": {"text": "up", "color": "green"}}}]})
    b.panel("stat", "Messages / s", [target(f"sum(rate(distill_messages_consumed_total[{RI}]))")],
            w=4, h=4, unit="ops")
    b.panel("stat", "Dead-lettered share", [target(
        f"sum(rate(distill_messages_dead_lettered_total[{RI}]))"
        f" / sum(rate(distill_messages_consumed_total[{RI}]))")], w=4, h=4, unit="percentunit",
        defaults=_thresholds((None, "green"), (0.01, "red")))
    b.panel("stat", "Consumer lag", [target("sum(distill_consumer_lag_messages)")], w=4, h=4,
            defaults=_thresholds((None, "green"), (10000, "red")))
    b.panel("stat", "Last checkpoint", [target(
        "time() - max(distill_checkpoint_timestamp_seconds)")], w=4, h=4, unit="s",
        description="Seconds since the last durable checkpoint.",
        defaults=_thresholds((None, "green"), (600, "red")))

    b.row("Throughput")
    b.panel("timeseries", "Messages consumed / s", [
        target(f"sum(rate(distill_messages_consumed_total[{RI}]))", "consumed"),
        target(f"sum(rate(distill_duplicate_events_total[{RI}]))", "duplicates")], unit="ops")
    b.panel("timeseries", "Events / s by teacher", [
        target(f"sum by (teacher) (rate(distill_teacher_events_total[{RI}]))", "{{teacher}}")],
        unit="ops")
    b.panel("timeseries", "Processing time per message", [
        target("histogram_quantile(0.5, sum by (le) "
               f"(rate(distill_processing_seconds_bucket[{RI}])))", "p50"),
        target("histogram_quantile(0.99, sum by (le) "
               f"(rate(distill_processing_seconds_bucket[{RI}])))", "p99")], unit="s")

    b.row("Dead letters, lag, groups")
    b.panel("timeseries", "Dead-lettered by reason", [target(
        f"sum by (reason) (increase(distill_messages_dead_lettered_total[{RI}])) > 0",
        "{{reason}}")], description="Rejected messages; the reason is the dead-letter header.",
        options={"legend": {"displayMode": "table", "placement": "right", "showLegend": True}})
    b.panel("timeseries", "Consumer lag by partition", [target(
        "max by (partition) (distill_consumer_lag_messages)", "partition {{partition}}")])
    b.panel("timeseries", "Teacher groups / s", [
        target(f"sum(rate(distill_groups_completed_total[{RI}]))", "completed"),
        target(f"sum(rate(distill_groups_timed_out_total[{RI}]))", "timed out"),
        target(f"sum(rate(distill_join_buffer_overflow_total[{RI}]))", "join overflow"),
        target(f"sum(rate(distill_dedup_window_overflow_total[{RI}]))", "dedup overflow")],
        unit="ops")

    b.row("Drift and alerts")
    b.panel("table", "Firing alerts", [target(
        'ALERTS{service="drift-distill", alertstate="firing"}', instant=True)], w=12, h=8,
        transformations=[{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True, "__name__": True, "service": True,
                              "alertstate": True}}}])
    b.panel("table", "Drift detections in range", [target(
        "sum by (teacher, signal, detector) "
        "(increase(distill_drift_detections_total[$__range])) > 0", instant=True)], w=12, h=8,
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}])
    b.panel("timeseries", "Checkpoints / s", [
        target(f"sum(rate(distill_checkpoints_total[{RI}]))", "checkpoints")], w=12, unit="ops")
    b.panel("timeseries", "Messages since start", [
        target("sum(distill_messages_consumed_total)", "consumed"),
        target("sum(distill_messages_dead_lettered_total)", "dead-lettered")], w=12)
    return b.to_json()


def teacher_drift() -> dict[str, Any]:
    b = Board("distill-teacher-drift", "drift-distill / teacher drift",
              "Per teacher: each signal's estimate with drift detections as annotations, the "
              "detector statistic against its threshold, and agreement with the consensus.",
              ["drift"])
    b.query_var("teacher", "label_values(distill_teacher_events_total, teacher)", "Teacher")
    b.query_var("detector", "label_values(distill_drift_statistic, detector)", "Detector")
    b.custom_var("signal", (*JOINT_KEYS, *SIGNALS), "Signal")  # joint tests, then per signal
    sel = 'teacher=~"$teacher"'
    b.annotation("Drift detections",
                 f"sum by (teacher, signal, detector) (increase(distill_drift_detections_total"
                 f"{{{sel}}}[$__interval])) > 0", "drift: {{teacher}} / {{signal}}")

    b.panel("stat", "Drift evidence", [target(
        f"max by (teacher) (distill_teacher_drift_evidence{{{sel}}})", "{{teacher}}")],
        w=12, h=5, unit="percentunit", description="Weights the teacher's negatives in APO.",
        defaults={"min": 0, "max": 1, **_thresholds((None, "green"), (0.5, "orange"),
                                                    (0.9, "red"))})
    b.panel("stat", "Last drift", [target(
        f"max by (teacher) (distill_last_drift_timestamp_seconds{{{sel}}}) * 1000 > 0",
        "{{teacher}}")], w=12, h=5, unit="dateTimeFromNow", options={"graphMode": "none"})

    b.row("Signal estimates")
    b.panel("timeseries", "Estimate: $signal", [target(
        f'distill_signal_estimate{{{sel}, signal=~"$signal"}}', "{{teacher}}")], h=8,
        repeat="signal", repeatDirection="h", maxPerRow=3,
        description="The signal's current estimate; red marks are drift detections.")

    b.row("Detectors")
    b.panel("timeseries", "Statistic / threshold", [target(
        f'distill_drift_statistic{{{sel}, detector=~"$detector"}}'
        f' / distill_drift_threshold{{{sel}, detector=~"$detector"}}',
        "{{teacher}} {{signal}} ({{detector}})")],
        w=12, description="1.0 is where the detector fires.",
        defaults={"custom": {"thresholdsStyle": {"mode": "line"}},
                  **_thresholds((None, "green"), (1, "red"))})
    b.panel("timeseries", "Window tests: statistic vs threshold", [  # joint MMD or KL window
        target(f'distill_drift_statistic{{{sel}, detector=~"mmd|kl_window"}}',
               "{{teacher}} {{signal}} statistic"),
        target(f'distill_drift_threshold{{{sel}, detector=~"mmd|kl_window"}}',
               "{{teacher}} {{signal}} threshold")], w=12,
        overrides=[{"matcher": {"id": "byRegexp", "options": ".*threshold"},
                    "properties": [{"id": "custom.lineStyle",
                                    "value": {"fill": "dash", "dash": [10, 10]}}]}])
    b.panel("timeseries", "Signal estimates (MMD² for the joint tests)", [target(
        f'distill_signal_estimate{{{sel}, signal=~"$signal"}}', "{{teacher}} {{signal}}")])
    b.panel("timeseries", "Detector window size", [target(
        f'distill_detector_window_size{{{sel}, detector=~"$detector"}}',
        "{{teacher}} {{signal}}")])
    b.panel("timeseries", "Events / s", [target(
        f"sum by (teacher) (rate(distill_teacher_events_total{{{sel}}}[{RI}]))", "{{teacher}}")],
        unit="ops")
    b.panel("table", "Detections in range", [target(
        f"sum by (teacher, signal, detector) (increase(distill_drift_detections_total"
        f"{{{sel}}}[$__range]))", instant=True)], w=24, h=8,
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}])
    return b.to_json()


def training() -> dict[str, Any]:
    b = Board("distill-training", "drift-distill / training",
              "The continual APO trainer: rounds, loss, reward margin, evaluation, version.",
              ["training"])
    b.panel("stat", "Student version", [target("max(distill_student_version)")], w=6, h=4,
            options={"graphMode": "none"})
    b.panel("stat", "Last successful round", [target(
        "max(distill_retrain_last_success_timestamp_seconds) * 1000 > 0")], w=6, h=4,
        unit="dateTimeFromNow", options={"graphMode": "none"})
    b.panel("stat", "Buffered groups", [target("sum(distill_trainer_buffer_groups)")], w=6, h=4)
    b.panel("stat", "Rounds failed (24h)", [target(
        'sum(increase(distill_retrain_runs_total{status="failed"}[1d]))')], w=6, h=4,
        defaults=_thresholds((None, "green"), (1, "red")))

    b.row("Rounds")
    b.panel("timeseries", "Rounds by outcome", [target(
        "sum by (status) (increase(distill_retrain_runs_total[$__interval]))", "{{status}}")],
        defaults={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}})
    b.panel("timeseries", "Rounds by trigger", [target(
        "sum by (trigger) (increase(distill_retrain_runs_total[$__interval]))", "{{trigger}}")],
        defaults={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}})
    b.panel("timeseries", "Round duration", [
        target("sum(rate(distill_retrain_duration_seconds_sum[$__range]))"
               " / sum(rate(distill_retrain_duration_seconds_count[$__range]))", "mean"),
        target("histogram_quantile(0.9, sum by (le) "
               "(rate(distill_retrain_duration_seconds_bucket[$__range])))", "p90")], unit="s")

    b.row("Learning")
    b.panel("timeseries", "APO loss", [target("distill_train_loss", "{{instance}}")])
    b.panel("timeseries", "Reward margin (positive − negatives)", [target(
        "distill_train_reward_margin", "{{instance}}")])
    b.panel("timeseries", "Student evaluation", [target(
        "max by (metric) (distill_student_eval_score)", "{{metric}}")],
        defaults={"min": 0, "max": 1})
    b.panel("timeseries", "Preference groups built / s", [
        target(f"sum(rate(distill_preference_groups_built_total[{RI}]))", "built"),
        target(f"sum(rate(distill_synthesis_fallbacks_total[{RI}]))", "synthesis fallbacks")],
        w=12, unit="ops")
    b.panel("timeseries", "Student version", [target("max(distill_student_version)", "version")],
            w=12, defaults={"custom": {"drawStyle": "line", "lineInterpolation": "stepAfter"}})
    return b.to_json()


BOARDS = {"overview.json": overview, "teacher-drift.json": teacher_drift,
          "training.json": training}


def outputs() -> dict[Path, str]:
    return {HERE / name: json.dumps(fn(), indent=2, ensure_ascii=False) + "\n"
            for name, fn in BOARDS.items()}


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression of a board: panels, annotations, variables."""
    out = [(f"panel {p['title']!r}", t["expr"]) for p in board["panels"]
           for t in p.get("targets", [])]
    out += [(f"annotation {a['name']!r}", a["expr"]) for a in board["annotations"]["list"]
            if "expr" in a]
    out += [(f"variable {v['name']!r}", v["definition"]) for v in board["templating"]["list"]
            if v["type"] == "query"]
    return out


def main(argv: list[str]) -> int:
    stale = [p for p, text in outputs().items() if not p.exists() or p.read_text() != text]
    if "--check" in argv:
        for p in stale:
            print(f"stale: dashboards/{p.name} (run python dashboards/build.py)")
        return 1 if stale else 0
    for p, text in outputs().items():
        p.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
