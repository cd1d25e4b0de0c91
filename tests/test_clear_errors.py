"""Clear one-line errors and non-zero exits instead of tracebacks, on both Kafka clients."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from serving import Topics, produce_events, run_in_thread

from stream.events import TeacherEvent
from stream.kafka import KafkaSettings

CLI = [sys.executable, "-c", "from distill.cli import main; main()"]


def distill(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=env)


def one_clear_line(proc: subprocess.CompletedProcess[str], rc: int, *words: str) -> None:
    assert proc.returncode == rc, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert all(w in proc.stderr for w in words), proc.stderr


@pytest.mark.slow
def test_serve_setup_errors_name_what_and_where(tmp_path: Path) -> None:
    one_clear_line(distill("serve", "--metrics-address", "nonsense", "--state-dir",
                           str(tmp_path / "s")), 2, "serve.metrics_address")
    (tmp_path / "file").write_text("x")
    one_clear_line(distill("serve", "--state-dir", str(tmp_path / "file" / "state"),
                           "--bootstrap-servers", "127.0.0.1:1"), 1, "state dir", "file")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_clear_line(distill("serve", "--metrics-address", f"127.0.0.1:{port}",
                               "--state-dir", str(tmp_path / "s"), "--bootstrap-servers",
                               "127.0.0.1:1"), 1, f"127.0.0.1:{port}")
    one_clear_line(distill("serve", "--metrics-address", "127.0.0.1:0", "--state-dir",
                           str(tmp_path / "s"), "--bootstrap-servers", "127.0.0.1:1"),
                   1, "127.0.0.1:1")


def test_status_on_a_missing_or_corrupt_state_dir_fails(tmp_path: Path) -> None:
    one_clear_line(distill("status", "--state-dir", str(tmp_path / "nowhere")), 1, "nowhere")
    cp = tmp_path / "checkpoints" / "teacher-outputs-0.json"
    cp.parent.mkdir()
    cp.write_bytes(b'{"version": 1, "trunc')
    one_clear_line(distill("status", "--state-dir", str(tmp_path)), 1, cp.name)


@pytest.mark.broker
@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_unreadable_checkpoint_stops_serve_naming_the_file(
        kafka_settings: KafkaSettings, tmp_path: Path, client: str) -> None:
    if client == "librdkafka":
        pytest.importorskip("confluent_kafka")
    from datetime import UTC, datetime

    topics = Topics.fresh()
    produce_events(kafka_settings, topics.input, [TeacherEvent(
        "e", "s", "a", "Final answer: yes", datetime(2026, 1, 1, tzinfo=UTC))])
    run_in_thread(topics.config(kafka_settings.bootstrap_servers, tmp_path))
    cp = next((tmp_path / "checkpoints").glob("*.json"))
    cp.unlink()
    cp.mkdir()  # unreadable as a file (permission bits do not stop root, this does)
    proc = distill("serve", "--idle-exit", "2", "--metrics-address", "127.0.0.1:0",
                   "--kafka-client", client,
                   env=topics.env(kafka_settings.bootstrap_servers, tmp_path))
    one_clear_line(proc, 1, "cannot restore a checkpoint", cp.name)
    shutil.rmtree(cp)
