"""Helpers for tests that run `distill serve` for real: as a subprocess or in a thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from distill.config import Config, load_config
from distill.monitor.service import MonitorService, RunLimits, RunSummary
from stream.broker import free_port
from stream.events import TeacherEvent
from stream.kafka import KafkaSettings, KafkaSink, KafkaSource, Record, ensure_topics


@dataclass(frozen=True)
class Topics:
    """Fresh topic and group names for one test, so tests never share a stream."""

    input: str
    dlq: str
    alerts: str
    groups: str
    group_id: str

    @classmethod
    def fresh(cls) -> Topics:
        tag = uuid.uuid4().hex[:10]
        return cls(f"in-{tag}", f"dlq-{tag}", f"alerts-{tag}", f"groups-{tag}", f"g-{tag}")

    def env(self, bootstrap: str, state_dir: Path, **serve: object) -> dict[str, str]:
        env = {**os.environ,
               "DISTILL_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
               "DISTILL_KAFKA__INPUT_TOPIC": self.input,
               "DISTILL_KAFKA__DEAD_LETTER_TOPIC": self.dlq,
               "DISTILL_KAFKA__ALERTS_TOPIC": self.alerts,
               "DISTILL_KAFKA__GROUPS_TOPIC": self.groups,
               "DISTILL_KAFKA__GROUP_ID": self.group_id,
               "DISTILL_SERVE__STATE_DIR": str(state_dir)}
        env.update({f"DISTILL_SERVE__{k.upper()}": str(v) for k, v in serve.items()})
        return env

    def config(self, bootstrap: str, state_dir: Path, partitions: int = 1,
               **serve: object) -> Config:
        cfg = load_config(None, env={}, overrides={
            "kafka": {"bootstrap_servers": bootstrap, "input_topic": self.input,
                      "dead_letter_topic": self.dlq, "alerts_topic": self.alerts,
                      "groups_topic": self.groups, "group_id": self.group_id,
                      "partitions": partitions},
            "serve": {"state_dir": str(state_dir), "metrics_address": "127.0.0.1:0", **serve},
        })
        assert isinstance(cfg, Config), cfg
        return cfg


def produce_raw(settings: KafkaSettings, topic: str, values: Iterable[tuple[bytes, bytes]],
                partitions: int = 1) -> int:
    """Send (key, value) pairs; returns the count."""
    ensure_topics(settings, {topic: partitions})
    sink = KafkaSink(settings)
    n = 0
    for key, value in values:
        sink.send(topic, value, key=key)
        n += 1
        if n % 5000 == 0:
            sink.flush()
    sink.flush()
    sink.close()
    return n


def produce_events(settings: KafkaSettings, topic: str, events: Iterable[TeacherEvent],
                   partitions: int = 1) -> int:
    return produce_raw(settings, topic,
                       ((e.sample_id.encode(), e.to_json_bytes()) for e in events), partitions)


def run_in_thread(cfg: Config, idle_exit_s: float = 2.0) -> RunSummary:
    """Run the real service loop to completion (until idle) in this process."""
    result: list[RunSummary] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(service.run())
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    service = MonitorService(cfg, limits=RunLimits(idle_exit_s=idle_exit_s))
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=300)
    if errors:
        raise errors[0]
    assert result, "serve did not finish"
    return result[0]


def start_serve(env: dict[str, str], *extra: str, log: Path | None = None
                ) -> subprocess.Popen[bytes]:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-c", "from distill.cli import main; main()",
                             "serve", "--metrics-address", f"127.0.0.1:{free_port()}", *extra],
                            env=env, stdout=out, stderr=out)


def status_json(state_dir: Path) -> dict:
    """`distill status --json`, run as a user would."""
    out = subprocess.run([sys.executable, "-c", "from distill.cli import main; main()",
                          "status", "--state-dir", str(state_dir), "--json"],
                         check=True, capture_output=True, env={**os.environ})
    return json.loads(out.stdout)


def read_topic(settings: KafkaSettings, topic: str, want: int, timeout: float = 60.0
               ) -> list[Record]:
    import time

    source = KafkaSource(settings, [topic], group_id=f"reader-{uuid.uuid4().hex[:8]}")
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(source.poll(timeout_ms=200))
    source.close()
    return got
