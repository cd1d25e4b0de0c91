"""`distill serve --demo`: the whole monitor on one laptop, in under a minute.

Starts the embedded broker, streams a simulator scenario into it from a background thread,
runs the real :class:`MonitorService` until the stream is drained, prints alerts as they
fire and ends with a per-teacher table that says which scheduled drifts were flagged.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from distill.config import Config
from distill.kafka import kafka_settings
from distill.monitor.embeddings import EXTRA_HINT, missing_modules
from distill.monitor.service import MonitorService, RunLimits
from distill.statedir import StateDir
from stream.broker import EmbeddedBroker
from stream.durable import write_json_atomic
from stream.kafka import KafkaSink, ensure_topics
from stream.simulator import PRODUCER_TUNING, change_points, generate, load_scenario, produce

DETECTION_WINDOW = 300  # events of the teacher after a change point that count as "flagged"


def run_demo(cfg: Config, scenario_name: str, seed: int) -> int:
    console = Console()
    scenario = load_scenario(scenario_name)
    points = change_points(scenario)
    root = StateDir(Path(cfg.serve.state_dir))
    state_dir = root.demo
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    cfg = _with_embeddings(cfg, root.models, console)
    write_json_atomic(StateDir(state_dir).changepoints, points)  # `distill report` marks them
    with EmbeddedBroker(log_path=None) as broker:
        cfg = cfg.model_copy(update={
            "kafka": cfg.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers,
                                                  "partitions": 1}),
            "serve": cfg.serve.model_copy(update={"state_dir": state_dir,
                                                  "metrics_address": "127.0.0.1:0"}),
        })
        settings = kafka_settings(cfg, broker.bootstrap_servers)
        ensure_topics(settings, {cfg.kafka.input_topic: 1})
        console.print(f"[bold]drift-distill demo[/]: broker {broker.bootstrap_servers}, "
                      f"scenario '{scenario_name}' (seed {seed}), state in {state_dir}")
        for p in points:
            console.print(f"  scheduled: {p['teacher']} {p['kind']} at sample "
                          f"{p['sample_index']}")
        producer = threading.Thread(target=_produce, args=(settings, cfg, scenario, seed),
                                    daemon=True)
        producer.start()

        def on_alert(alert: dict[str, Any]) -> None:
            console.print(f"[red]DRIFT[/] {alert['teacher']:<12} {alert['signal']:<9} "
                          f"{alert['detector']:<9} at event {alert['index']}")

        logging.getLogger("distill.serve").setLevel(logging.ERROR)  # alerts print below
        service = MonitorService(cfg, limits=RunLimits(idle_exit_s=4.0, finish=True),
                                 on_alert=on_alert)
        total = scenario.samples * len(scenario.teachers)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("monitoring", total=total)
            watcher = threading.Thread(target=_watch, args=(service, progress, task, total),
                                       daemon=True)
            watcher.start()
            summary = service.run()
        producer.join()
    console.print(f"processed {summary.records} events, {summary.checkpoints} checkpoints")
    flagged = _print_summary(console, summary.alerts, points)
    console.print(f"\n{flagged}/{len(points)} scheduled drifts flagged. "
                  f"Inspect with: distill status --state-dir {state_dir}\n"
                  f"Pictures:     distill report --state-dir {state_dir} --out {state_dir}/report")
    return 0


def _watch(service: MonitorService, progress: Progress, task: Any, total: int) -> None:
    while service.running and service.summary.records < total:
        progress.update(task, completed=service.summary.records)
        time.sleep(0.2)
    progress.update(task, completed=service.summary.records)


def _with_embeddings(cfg: Config, models: Path, console: Console) -> Config:
    """Content embeddings on where the extra is installed, the model kept outside the demo's
    wiped state dir; built here, before the stream starts (the first time: 1-2 min)."""
    detectors = cfg.detectors.model_copy(update={
        "embeddings": "on" if cfg.detectors.embeddings == "on" else "auto",
        "embedding_cache": cfg.detectors.embedding_cache or models})
    missing = missing_modules()
    if missing and detectors.embeddings == "auto":
        console.print(f"content embeddings off: {', '.join(missing)} not installed "
                      f"({EXTRA_HINT})")
        detectors = detectors.model_copy(update={"embeddings": "off"})
    elif detectors.embedder(models) is not None:
        console.print(f"content embeddings on ({detectors.embedding_dim} dimensions, "
                      f"model in {detectors.embedding_cache})")
    return cfg.model_copy(update={"detectors": detectors})


def _produce(settings: Any, cfg: Config, scenario: Any, seed: int) -> None:
    sink = KafkaSink(settings, **PRODUCER_TUNING)
    try:
        produce(generate(scenario, seed), sink, cfg.kafka.input_topic)
    finally:
        sink.close()


def _print_summary(console: Console, alerts: Iterable[dict[str, Any]],
                   points: list[dict[str, Any]]) -> int:
    by_teacher: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for alert in alerts:
        by_teacher[alert["teacher"]].append(alert)
    table = Table(title="per-teacher summary")
    for col in ("teacher", "alerts", "signals", "scheduled drift", "flagged"):
        table.add_column(col)
    teachers = sorted(set(by_teacher) | {p["teacher"] for p in points})
    flagged_total = 0
    for teacher in teachers:
        mine = by_teacher.get(teacher, [])
        signals = ", ".join(sorted({a["signal"] for a in mine})) or "-"
        scheduled = [p for p in points if p["teacher"] == teacher]
        marks = []
        for p in scheduled:
            start = p["event_index_of_teacher"]
            hit = any(start <= a["index"] <= start + DETECTION_WINDOW for a in mine)
            flagged_total += hit
            marks.append(f"{p['kind']}@{start}: {'yes' if hit else 'NO'}")
        table.add_row(teacher, str(len(mine)), signals,
                      ", ".join(f"{p['kind']}@{p['event_index_of_teacher']}" for p in scheduled)
                      or "-", "; ".join(marks) or "-")
    console.print(table)
    return flagged_total
