"""Three teacher functions answer a list of prompts; one of them drifts halfway; the monitor
catches it. Everything a real deployment needs, on one machine, in about a minute:

    python examples/teachers_to_alerts.py [--prompts 600] [--bootstrap-servers HOST:PORT]

Without --bootstrap-servers an embedded Kafka-protocol broker is started for the run. Replace
the ``teacher_*`` functions with calls to your APIs (or send from your gateway with
``distill ingest`` / ``POST /v1/events``): the rest stays the same.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stream import TeacherProducer
from stream.broker import EmbeddedBroker

LABELS = ("improving", "stable", "worsening")


def teacher_careful(case: int, truth: str) -> str:
    return f"Compared with the prior study the finding is {truth}. Final answer: {truth}"


def teacher_terse(case: int, truth: str) -> str:
    answer = truth if random.Random(case).random() < 0.9 else LABELS[case % 3]
    return f"Final answer: {answer}"


def teacher_drifting(case: int, truth: str, drifted: bool) -> str:
    """Like the careful teacher until its provider ships a new version: then it hedges at
    length and calls everything worsening."""
    if not drifted:
        return teacher_careful(case, truth)
    hedge = " It is difficult to be certain without the images themselves." * 6
    return f"Several factors could be involved.{hedge} Final answer: worsening"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--bootstrap-servers", default=None)
    args = parser.parse_args()
    topic = f"teacher-outputs-{uuid.uuid4().hex[:6]}"
    with ExitStack() as stack:
        servers = args.bootstrap_servers
        if servers is None:
            servers = stack.enter_context(EmbeddedBroker()).bootstrap_servers
        state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        send_answers(servers, topic, args.prompts)
        alerts = run_monitor(servers, topic, state)
    print(f"\n{len(alerts)} drift alert(s):")
    for alert in alerts:
        print(f"  teacher={alert['teacher']:<10} signal={alert['signal']:<12} "
              f"detector={alert['detector']:<10} at event {alert['index']} of partition "
              f"{alert['partition']}")
    return 0 if alerts else 1


def send_answers(servers: str, topic: str, prompts: int) -> None:
    """Every teacher answers every prompt; the producer keys by sample_id and validates."""
    start = datetime(2026, 3, 1, tzinfo=UTC)
    rng = random.Random(7)
    with TeacherProducer(servers, topic=topic, partitions=2) as producer:
        for case in range(prompts):
            truth = rng.choice(LABELS)
            prompt = f"Case {case}: is the consolidation improving, stable or worsening?"
            at = start + timedelta(minutes=case)
            answers = {"careful": teacher_careful(case, truth),
                       "terse": teacher_terse(case, truth),
                       "drifting": teacher_drifting(case, truth, drifted=case >= prompts // 2)}
            for teacher, output in answers.items():
                producer.send(teacher, f"case-{case}", output, produced_at=at, prompt=prompt)
    print(f"sent {prompts * 3} answers from 3 teachers to {topic}")


def run_monitor(servers: str, topic: str, state: Path) -> list[dict]:
    """`distill serve` over the topic until it has been idle for 3 s; returns its alerts."""
    subprocess.run([sys.executable, "-c", "from distill.cli import main; main()", "serve",
                    "--bootstrap-servers", servers,
                    "--input-topic", topic, "--group-id", f"{topic}-monitor",
                    "--state-dir", str(state), "--metrics-address", "127.0.0.1:0",
                    "--expected-teachers", "careful,terse,drifting", "--idle-exit", "3"],
                   check=True)
    lines = (state / "alerts.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


if __name__ == "__main__":
    sys.exit(main())
