"""Bring your own teachers, on the real broker: `distill ingest` of recorded API logs into
`distill serve`, the HTTP gateway under a burst, and the Python producer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from click.testing import CliRunner, Result
from serving import Topics, read_topic, run_in_thread

from distill.cli import main
from distill.monitor.status import monitor_status
from stream import InvalidEvent, TeacherProducer
from stream.broker import free_port, wait_for_port
from stream.kafka import KafkaSettings

pytestmark = pytest.mark.broker
DATA = Path(__file__).parent / "data"
TEACHERS = ["gpt-4o", "o4-mini", "claude-sonnet-4-20250514"]
CLI = [sys.executable, "-c", "from distill.cli import main; main()"]


def ingest(env: dict[str, str], *args: str, stdin: bytes | None = None) -> Result:
    """`distill ingest` in this process (the CLI as a user calls it, without a second
    interpreter start-up per call)."""
    return CliRunner().invoke(main, ["ingest", "--no-progress", *args], env=env, input=stdin)


def test_api_logs_through_ingest_into_serve_and_reingest_adds_nothing(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    topics = Topics.fresh()
    env = topics.env(kafka_settings.bootstrap_servers, tmp_path / "state")
    rejects = tmp_path / "rejects.jsonl"
    done = ingest(env, str(DATA / "openai.jsonl"), str(DATA / "anthropic.jsonl"),
                  "--rejects", str(rejects))
    assert done.exit_code == 1, done.output  # one line rejected
    assert "sent 24 events" in done.output and "bad_format:openai-chat" in done.output
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert reject["reason"] == "bad_format:openai-chat"
    assert reject["source"].endswith("openai.jsonl:17") and "rate_limit" in reject["line"]

    # files per teacher, not interleaved by time: the join waits the files' whole time span
    cfg = topics.config(kafka_settings.bootstrap_servers, tmp_path / "state",
                        expected_teachers=TEACHERS, group_timeout_s=3600)
    assert run_in_thread(cfg).records == 24
    status = monitor_status(tmp_path / "state")
    assert status["groups_completed"] == 8
    assert {t: v["events"] for t, v in status["teachers"].items()} == dict.fromkeys(TEACHERS, 8)

    again = ingest(env, "--rejects", str(rejects),  # the same file again, through stdin
                   stdin=(DATA / "openai.jsonl").read_bytes())
    assert "sent 16 events" in again.output
    run_in_thread(cfg)
    status = monitor_status(tmp_path / "state")
    assert status["duplicates"] == 16 and status["groups_completed"] == 8
    assert {t: v["events"] for t, v in status["teachers"].items()} == dict.fromkeys(TEACHERS, 8)


def _post(url: str, body: object, token: str = "tok") -> tuple[int, dict]:
    req = Request(url, data=json.dumps(body).encode(), method="POST",
                  headers={"Authorization": f"Bearer {token}",
                           "Content-Type": "application/json"})
    try:
        with urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except HTTPError as err:
        return err.code, json.loads(err.read())


def _event(i: int, teacher: str = "gpt-4o") -> dict:
    return {"teacher": teacher, "sample_id": f"s{i}", "output": f"Final answer: {i % 3}",
            "produced_at": 1772366400 + i}


def test_gateway_accepts_rejects_with_reasons_and_survives_a_burst(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    topics = Topics.fresh()
    port = free_port()
    env = {**topics.env(kafka_settings.bootstrap_servers, tmp_path), "DISTILL_HTTP__TOKEN": "tok"}
    gateway = subprocess.Popen([*CLI, "gateway", "--address", f"0.0.0.0:{port}"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for_port("127.0.0.1", port, 60), gateway.stderr
        url = f"http://127.0.0.1:{port}/v1/events"
        status, reply = _post(url, _event(0))
        assert status == 200 and reply["accepted"] == 1 and reply["event_ids"][0].startswith("ev-")
        assert _post(url, _event(0), token="wrong")[0] == 401
        status, reply = _post(url, [_event(1), {**_event(2), "output": 5}, {"teacher": "x"}])
        assert status == 422 and reply["accepted"] == 0
        assert [(r["index"], r["reason"]) for r in reply["rejected"]] == [
            (1, "bad_type:output"), (2, "missing_field:sample_id")]
        assert _post(url, {"events": [_event(3), _event(4, "claude")]})[0] == 200

        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda i: _post(url, _event(1000 + i))[0], range(1000)))
        burst_s = time.monotonic() - started
        assert codes.count(200) == 1000, {c: codes.count(c) for c in set(codes)}
        with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200
        records = read_topic(kafka_settings, topics.input, 1003)
        assert len(records) == 1003  # 1 + 2 + 1000; the rejected batch sent nothing
        assert all(json.loads(r.value)["sample_id"] == r.key.decode() for r in records)
        print(f"burst of 1000 requests: {burst_s:.1f} s")
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)


def test_teacher_producer_validates_keys_and_flushes_on_exit(
        kafka_settings: KafkaSettings) -> None:
    topic = f"t-{uuid.uuid4().hex[:10]}"
    with TeacherProducer(kafka_settings, topic=topic, partitions=2) as producer:
        first = producer.send("gpt-4o", "case-1", "Final answer: yes", prompt="q?")
        producer.send("claude", "case-1", "Final answer: no", produced_at="2026-03-01T12:00:00Z",
                      meta={"latency_ms": 5})
        with pytest.raises(InvalidEvent) as bad:
            producer.send("gpt-4o", "", "Final answer: yes")
        assert bad.value.reason == "bad_value:sample_id"
    # a process that never closes its producer still delivers at exit; the same answer
    # gets the same event id, so the monitor would drop it as a repeat
    script = ("import sys; from stream import TeacherProducer; "
              "TeacherProducer(sys.argv[1], topic=sys.argv[2]).send("
              "'gpt-4o', 'case-1', 'Final answer: yes', produced_at=sys.argv[3])")
    subprocess.run([sys.executable, "-c", script, kafka_settings.bootstrap_servers, topic,
                    first.produced_at.isoformat()], check=True, timeout=60)
    records = read_topic(kafka_settings, topic, 3)
    assert len(records) == 3 and {r.key for r in records} == {b"case-1"}
    ids = [json.loads(r.value)["event_id"] for r in records]
    assert ids.count(first.event_id) == 2
    assert len({r.partition for r in records}) == 1  # one case, one partition: the join holds
