"""The metrics contract and the /metrics + /healthz server, over real HTTP."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from distill.http import parse_address, start_http_server
from distill.metrics import (
    RETRAIN_STATUSES,
    BankCollector,
    MonitorMetrics,
    TrainerMetrics,
    metric_names,
)
from distill.trainer.triggers import TRIGGERS
from stream.events import REJECTION_REASONS
from stream.signals import SIGNALS

NAME_RULES = re.compile(r"^distill_[a-z0-9_]+$")
ALLOWED_LABELS = {"teacher", "signal", "detector", "reason", "trigger", "status", "partition",
                  "metric", "version", "le"}


def _summary() -> dict:
    return {
        "gpt": {
            "length": {"n": 500, "estimate": 120.5, "window_size": 200, "statistic": 0.4,
                       "threshold": 1.2, "last_detection": 310, "detections": 1,
                       "last_detection_time": "2026-01-01T00:00:00Z", "detector": "kl_window"},
            "agreement": {"n": 90, "estimate": 0.8, "window_size": None, "statistic": None,
                          "threshold": None, "last_detection": None, "detections": 0,
                          "last_detection_time": None, "detector": "adwin"},
        },
        "claude": {"refusal": {"n": 3, "estimate": float("nan"), "detector": "adwin",
                               "last_detection_time": datetime(2026, 1, 2, tzinfo=UTC)}},
    }


def _both() -> CollectorRegistry:
    reg = CollectorRegistry()
    m = MonitorMetrics(reg)
    m.attach_bank(_summary, lambda: {"gpt": 0.7, "claude": None})
    TrainerMetrics(reg)  # serve may host the trainer: both share one registry
    return reg


def test_metrics_use_injected_registry_not_the_global_one():
    before = set(metric_names(REGISTRY))
    _both()
    assert not {n for n in metric_names(REGISTRY) - before if n.startswith("distill_")}


def test_every_name_has_prefix_and_counters_end_in_total():
    reg = _both()
    for family in reg.collect():
        assert NAME_RULES.match(family.name), family.name
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, (sample.name, sample.labels)
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)


def test_contract_names_exist():
    names = metric_names(_both())
    expected = {
        "distill_messages_consumed_total", "distill_messages_dead_lettered_total",
        "distill_duplicate_events_total", "distill_processing_seconds_bucket",
        "distill_drift_detections_total", "distill_groups_completed_total",
        "distill_groups_timed_out_total", "distill_join_buffer_overflow_total",
        "distill_dedup_window_overflow_total", "distill_checkpoint_timestamp_seconds",
        "distill_checkpoints_total", "distill_broker_up", "distill_consumer_lag_messages",
        "distill_last_message_timestamp_seconds", "distill_teacher_events_total",
        "distill_build_info", "distill_drift_statistic", "distill_drift_threshold",
        "distill_detector_window_size", "distill_signal_estimate",
        "distill_last_drift_timestamp_seconds", "distill_teacher_drift_evidence",
        "distill_retrain_runs_total", "distill_retrain_duration_seconds_bucket",
        "distill_retrain_last_success_timestamp_seconds", "distill_train_loss",
        "distill_train_reward_margin", "distill_student_eval_score", "distill_student_version",
        "distill_preference_groups_built_total", "distill_trainer_buffer_groups",
        "distill_synthesis_fallbacks_total",
    }
    assert expected <= names, expected - names


def test_known_label_values_exist_at_zero_before_anything_happens():
    reg = CollectorRegistry()
    MonitorMetrics(reg)
    TrainerMetrics(reg)
    for reason in REJECTION_REASONS:
        assert reg.get_sample_value("distill_messages_dead_lettered_total",
                                    {"reason": reason}) == 0.0
    for trigger in TRIGGERS:
        for status in RETRAIN_STATUSES:
            assert reg.get_sample_value("distill_retrain_runs_total",
                                        {"trigger": trigger, "status": status}) == 0.0


def test_teacher_seen_creates_detection_children_once():
    reg = CollectorRegistry()
    m = MonitorMetrics(reg)
    pairs = {s: "kl_window" for s in SIGNALS}
    m.teacher_seen("gpt", pairs)
    m.drift_detections.labels(teacher="gpt", signal="vocab", detector="kl_window").inc()
    m.teacher_seen("gpt", pairs)  # idempotent: must not reset anything
    get = reg.get_sample_value
    assert get("distill_drift_detections_total",
               {"teacher": "gpt", "signal": "vocab", "detector": "kl_window"}) == 1.0
    assert get("distill_drift_detections_total",
               {"teacher": "gpt", "signal": "length", "detector": "kl_window"}) == 0.0
    assert get("distill_teacher_events_total", {"teacher": "gpt"}) == 0.0


def test_bank_collector_reads_live_state_and_skips_missing_values():
    reg = _both()
    get = reg.get_sample_value
    tsd = {"teacher": "gpt", "signal": "length", "detector": "kl_window"}
    assert get("distill_drift_statistic", tsd) == 0.4
    assert get("distill_drift_threshold", tsd) == 1.2
    assert get("distill_detector_window_size", tsd) == 200
    assert get("distill_detector_observations_total", tsd) == 500
    assert get("distill_signal_estimate", {"teacher": "gpt", "signal": "agreement"}) == 0.8
    assert get("distill_last_drift_timestamp_seconds",
               {"teacher": "gpt", "signal": "length"}) == 1767225600.0
    assert get("distill_last_drift_timestamp_seconds",
               {"teacher": "gpt", "signal": "agreement"}) == 0.0
    assert get("distill_last_drift_timestamp_seconds",
               {"teacher": "claude", "signal": "refusal"}) == 1767312000.0
    # None and NaN are skipped, not exported as 0
    assert get("distill_drift_statistic",
               {"teacher": "gpt", "signal": "agreement", "detector": "adwin"}) is None
    assert get("distill_signal_estimate", {"teacher": "claude", "signal": "refusal"}) is None
    assert get("distill_teacher_drift_evidence", {"teacher": "gpt"}) == 0.7
    assert get("distill_teacher_drift_evidence", {"teacher": "claude"}) is None


def test_bank_collector_follows_the_bank_between_scrapes():
    state = {"gpt": {"length": {"estimate": 1.0, "detector": "adwin"}}}
    reg = CollectorRegistry()
    MonitorMetrics(reg).attach_bank(lambda: state)
    labels = {"teacher": "gpt", "signal": "length"}
    assert reg.get_sample_value("distill_signal_estimate", labels) == 1
    state["gpt"]["length"]["estimate"] = 2.5
    assert reg.get_sample_value("distill_signal_estimate", labels) == 2.5


def test_scrape_creates_detection_counters_at_zero_for_every_bank_key():
    state = {"grok-4": {"length": {"n": 3, "estimate": 40.0, "detector": "adwin"}}}
    reg = CollectorRegistry()
    MonitorMetrics(reg).attach_bank(lambda: state)
    labels = {"teacher": "grok-4", "signal": "length", "detector": "adwin"}
    assert reg.get_sample_value("distill_drift_detections_total", labels) is None
    list(reg.collect())  # the first scrape after the bank learned the teacher
    assert reg.get_sample_value("distill_drift_detections_total", labels) == 0.0
    assert reg.get_sample_value("distill_teacher_events_total", {"teacher": "grok-4"}) == 0.0


def test_last_drift_time_is_when_a_scrape_saw_the_detections_rise():
    now = [1000.0]
    entry = {"detector": "adwin", "detections": 2}  # restored from a checkpoint: time unknown
    collector = BankCollector(lambda: {"gpt": {"length": entry}}, clock=lambda: now[0])

    def last_drift() -> float:
        fam = {f.name: f for f in collector.collect()}["distill_last_drift_timestamp_seconds"]
        return fam.samples[0].value

    assert last_drift() == 0.0
    now[0] = 1010.0
    assert last_drift() == 0.0  # no new detection
    entry["detections"] = 3
    now[0] = 1020.0
    assert last_drift() == 1020.0
    now[0] = 1030.0
    assert last_drift() == 1020.0


def test_last_drift_time_uses_this_process_detections_not_restored_ones():
    bank = {"gpt": {"length": {"detector": "adwin", "detections": 4},     # 4 restored
                    "vocab": {"detector": "kl_window", "detections": 1}}}
    reg = CollectorRegistry()
    m = MonitorMetrics(reg)
    m.attach_bank(lambda: bank)
    # a fast stream: the detection happens before the first scrape ever sees the key
    m.drift_detections.labels(teacher="gpt", signal="vocab", detector="kl_window").inc()
    before = time.time()
    last = {s.labels["signal"]: s.value for f in reg.collect() for s in f.samples
            if s.name == "distill_last_drift_timestamp_seconds"}
    assert last["vocab"] >= before
    assert last["length"] == 0.0  # restored from a checkpoint: no time known


def test_record_detection_counts_and_sets_the_last_drift_time():
    reg = CollectorRegistry()
    m = MonitorMetrics(reg)
    m.attach_bank(lambda: {"gpt": {"refusal": {"detector": "adwin", "detections": 1}}})
    m.record_detection("gpt", "refusal", "adwin", when=1234.0)
    assert reg.get_sample_value("distill_drift_detections_total",
                                {"teacher": "gpt", "signal": "refusal", "detector": "adwin"}) == 1
    assert reg.get_sample_value("distill_last_drift_timestamp_seconds",
                                {"teacher": "gpt", "signal": "refusal"}) == 1234.0


def test_failing_bank_summary_does_not_break_the_scrape():
    def broken() -> dict:
        raise RuntimeError("bank is being restored")

    reg = CollectorRegistry()
    m = MonitorMetrics(reg)
    m.attach_bank(broken)
    m.messages_consumed.inc(3)
    assert reg.get_sample_value("distill_messages_consumed_total") == 3.0


def test_parse_address_rejects_bad_input():
    with pytest.raises(ValueError, match="host:port"):
        parse_address("localhost")
    with pytest.raises(ValueError, match="host:port"):
        parse_address("localhost:99999")


@pytest.fixture()
def served():
    reg = _both()
    state = {"healthy": True}
    received: list[bytes] = []

    def health():
        return state["healthy"], {"broker": "up" if state["healthy"] else "down"}

    def webhook(body: bytes):
        received.append(body)
        return 202, {"queued": True}

    srv = start_http_server("127.0.0.1:0", reg, health, {"/-/retrain": webhook})
    yield srv, state, received
    srv.shutdown()


def _get(url: str, accept: str | None = None) -> tuple[int, bytes, str]:
    req = Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urlopen(req, timeout=5) as resp:
            return resp.status, resp.read(), resp.headers["Content-Type"]
    except HTTPError as err:
        return err.code, err.read(), err.headers["Content-Type"]


def test_metrics_endpoint_serves_parseable_exposition(served):
    srv, _, _ = served
    status, body, ctype = _get(f"http://127.0.0.1:{srv.port}/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    families = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"distill_messages_consumed", "distill_drift_statistic",
            "distill_retrain_runs"} <= families


def test_metrics_endpoint_speaks_openmetrics_when_asked(served):
    srv, _, _ = served
    status, body, ctype = _get(f"http://127.0.0.1:{srv.port}/metrics",
                               accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_healthz_is_200_when_healthy_and_503_when_not(served):
    srv, state, _ = served
    url = f"http://127.0.0.1:{srv.port}/healthz"
    status, body, _ = _get(url)
    assert status == 200 and json.loads(body) == {"broker": "up", "healthy": True}
    state["healthy"] = False
    status, body, _ = _get(url)
    assert status == 503 and json.loads(body)["broker"] == "down"


def test_healthz_is_503_when_the_health_check_raises():
    def boom():
        raise OSError("state dir unreadable")

    srv = start_http_server("127.0.0.1:0", CollectorRegistry(), boom)
    try:
        status, body, _ = _get(f"http://127.0.0.1:{srv.port}/healthz")
    finally:
        srv.shutdown()
    assert status == 503 and "state dir unreadable" in json.loads(body)["error"]


def test_unknown_path_is_404_and_post_route_gets_the_body(served):
    srv, _, received = served
    assert _get(f"http://127.0.0.1:{srv.port}/nope")[0] == 404
    req = Request(f"http://127.0.0.1:{srv.port}/-/retrain", data=b'{"alerts": []}', method="POST")
    with urlopen(req, timeout=5) as resp:
        assert resp.status == 202 and json.loads(resp.read()) == {"queued": True}
    assert received == [b'{"alerts": []}']


def test_server_handles_concurrent_scrapes_and_shuts_down_cleanly():
    reg = _both()
    srv = start_http_server(":0", reg, lambda: (True, {}))
    assert srv.host == "127.0.0.1"  # loopback unless told otherwise
    codes: list[int] = []

    def scrape() -> None:
        codes.append(_get(f"http://127.0.0.1:{srv.port}/metrics")[0])

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    srv.shutdown()
    srv.shutdown()  # idempotent
    assert codes == [200] * 8
    assert not srv.thread.is_alive()
    with pytest.raises(OSError):
        urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=2)
