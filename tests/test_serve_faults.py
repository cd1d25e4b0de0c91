"""Fault tests with real processes: kill -9, a stalled broker, a fuzzed stream."""

from __future__ import annotations

import json
import random
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serving import Topics, produce_events, produce_raw, read_topic, start_serve, status_json

from distill.groups import TeacherGroup
from stream.archive import read_archive
from stream.broker import EmbeddedBroker, free_port
from stream.deadletter import header_dict
from stream.kafka import KafkaSettings
from stream.simulator import generate, load_scenario

# The kill -9 test's stream: big enough for six lives killed at random record counts, each
# life between 0 and 3 checkpoints in, never to reach its end (6 x the largest kill target is
# below the event count); size itself proves nothing more.
N_SAMPLES = 1430  # x 7 teachers = 10,010 events
N_EVENTS = N_SAMPLES * 7
KILL_CHECKPOINT_EVERY = 500
KILL_AFTER = (200, 1500)  # records a life handles before its kill, drawn uniformly
STALL_S = 20.0  # the broker stall: over three consumer session timeouts (6 s)


def run_to_end(env: dict[str, str], log: Path, timeout: float = 300) -> None:
    proc = start_serve(env, "--idle-exit", "3", log=log)
    assert proc.wait(timeout=timeout) == 0, log.read_text()[-3000:]


def comparable(status: dict) -> dict:
    """Everything in `distill status --json` that must not depend on crashes."""
    status = {k: v for k, v in status.items() if k not in ("state_dir", "registry")}
    status["checkpoints"] = [{k: v for k, v in cp.items() if k != "written_at"}
                             for cp in status["checkpoints"]
                             if not cp["topic"].endswith("-observations")]  # re-sent copies
    status["detect"] = {k: v for k, v in status["detect"].items() if k != "duplicates"}
    return status


def archived_samples(state_dir: Path) -> list[str]:
    return [TeacherGroup.from_json(x).sample_id for x in read_archive(state_dir / "archive")]


def test_kill_9_at_random_moments_loses_and_double_counts_nothing(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    scenario = load_scenario("default").with_samples(N_SAMPLES)
    events = list(generate(scenario, seed=11))
    src = Topics.fresh()
    n = produce_events(kafka_settings, src.input, events, partitions=2)
    assert n == N_EVENTS
    assert 6 * KILL_AFTER[1] < N_EVENTS  # no life runs out of stream before its kill

    clean_dir, crash_dir = tmp_path / "clean", tmp_path / "crash"
    clean = Topics(src.input, src.dlq, src.alerts, src.groups, src.group_id + "-clean")
    run_to_end(clean.env(kafka_settings.bootstrap_servers, clean_dir,
                         checkpoint_every=KILL_CHECKPOINT_EVERY), tmp_path / "clean.log")

    crash = Topics(src.input, src.dlq, src.alerts, src.groups, src.group_id + "-crash")
    env = crash.env(kafka_settings.bootstrap_servers, crash_dir,
                    checkpoint_every=KILL_CHECKPOINT_EVERY)
    rng = random.Random(5)
    kills = 0
    for life in range(6):  # each life is killed after a random share of what is left to do
        port = free_port()
        # lives alternate the Kafka client: each must resume exactly where the other's
        # checkpoint and commit left off
        client = "librdkafka" if life % 2 else "kafka-python"
        proc = start_serve({**env, "DISTILL_KAFKA__CLIENT": client},
                           "--metrics-address", f"127.0.0.1:{port}", log=tmp_path / "crash.log")
        target = rng.randrange(*KILL_AFTER)
        if wait_for_records(port, target, proc) and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 5
    run_to_end(env, tmp_path / "crash.log")

    want, got = status_json(clean_dir), status_json(crash_dir)
    assert sum(t["events"] for t in got["teachers"].values()) == N_EVENTS
    assert comparable(got) == comparable(want)
    groups = archived_samples(crash_dir)
    assert sorted(groups) == sorted(archived_samples(clean_dir))
    assert len(set(groups)) == len(groups)


def wait_for_records(port: int, target: int, proc, timeout: float = 120) -> bool:
    """Wait until the serve process on ``port`` has handled ``target`` records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if get(f"http://127.0.0.1:{port}/healthz")[1].get("records", 0) >= target:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def wait_for_health(url: str, code: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get(url)[0] == code:
            return True
        time.sleep(0.2)
    return False


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_stalled_broker_is_reported_and_serve_catches_up(tmp_path: Path, client: str) -> None:
    scenario = load_scenario("default").with_samples(400)
    events = list(generate(scenario, seed=2))
    topics = Topics.fresh()
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        settings = KafkaSettings(broker.bootstrap_servers)
        produce_events(settings, topics.input, events[:1400])
        port = free_port()
        env = topics.env(broker.bootstrap_servers, tmp_path / "state", checkpoint_every=200)
        env["DISTILL_KAFKA__CLIENT"] = client
        proc = start_serve(env, "--metrics-address", f"127.0.0.1:{port}",
                           log=tmp_path / "serve.log")
        healthz = f"http://127.0.0.1:{port}/healthz"
        assert wait_for_records(port, 1400, proc)
        assert wait_for_health(healthz, 200)

        broker.pause()
        stall_ends = time.monotonic() + STALL_S
        assert wait_for_health(healthz, 503)  # the probe gives up after 5 s without an answer
        code, body = get(healthz)
        assert code == 503 and body["broker_reachable"] is False
        time.sleep(max(0.0, stall_ends - time.monotonic()))
        broker.resume()

        produce_events(settings, topics.input, events[1400:])
        assert wait_for_records(port, len(events), proc), "serve did not catch up"
        assert wait_for_health(healthz, 200)
        proc.send_signal(signal.SIGTERM)  # graceful: finish, checkpoint, commit, exit 0
        assert proc.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()[-3000:]
    status = status_json(tmp_path / "state")
    assert sum(t["events"] for t in status["teachers"].values()) == len(events)


def fuzzed_bad_messages(rng: random.Random, valid: list[bytes], n: int) -> list[tuple[bytes, str]]:
    """Messages that are bad by construction, each with the reason it must be rejected for."""
    out: list[tuple[bytes, str]] = []
    required = ["event_id", "sample_id", "teacher", "output", "produced_at"]
    while len(out) < n:
        base = rng.choice(valid)
        kind = rng.randrange(6)
        if kind == 0:  # a proper prefix of a JSON object is never valid JSON
            out.append((base[: rng.randrange(1, len(base) - 1)], "not_json"))
        elif kind == 1:
            out.append((bytes([0xFF]) + rng.randbytes(rng.randrange(0, 64)), "not_json"))
        elif kind == 2:
            doc = json.loads(base)
            field = rng.choice(required)
            del doc[field]
            out.append((json.dumps(doc).encode(), f"missing_field:{field}"))
        elif kind == 3:
            doc = json.loads(base)
            field = rng.choice(required)
            doc[field] = rng.choice([1, 2.5, True, [1], {"x": 1}])
            out.append((json.dumps(doc).encode(), f"bad_type:{field}"))
        elif kind == 4:
            doc = json.loads(base)
            doc["output"] = "x" * 5000
            out.append((json.dumps(doc).encode(), "too_large"))
        else:
            doc = json.loads(base)
            doc["produced_at"] = rng.choice(["yesterday", "2026-13-01", "", "12:00"])
            out.append((json.dumps(doc).encode(), "bad_timestamp"))
    return out


@pytest.mark.parametrize("seed", [7])
def test_fuzzed_stream_dead_letters_every_bad_message(kafka_settings: KafkaSettings,
                                                      tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    events = list(generate(load_scenario("default").with_samples(300), seed=seed))
    valid = [e.to_json_bytes() for e in events]
    bad = fuzzed_bad_messages(rng, valid, 1500)  # ~250 of each of the six kinds
    stream: list[tuple[bytes, bytes]] = [(b"v", v) for v in valid]
    for value, _ in bad:
        stream.insert(rng.randrange(len(stream) + 1), (b"bad", value))
    topics = Topics.fresh()
    produce_raw(kafka_settings, topics.input, stream)
    env = topics.env(kafka_settings.bootstrap_servers, tmp_path / "state",
                     max_message_bytes=4096)
    run_to_end(env, tmp_path / "serve.log")

    dead = read_topic(kafka_settings, topics.dlq, len(bad), timeout=90)
    assert len(dead) == len(bad)
    want = sorted(reason for _, reason in bad)
    assert sorted(header_dict(r.headers)["dlq.reason"] for r in dead) == want
    status = status_json(tmp_path / "state")
    assert sum(t["events"] for t in status["teachers"].values()) == len(valid)
