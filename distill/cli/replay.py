"""`distill replay`: run an archived or recorded stream through the monitor pipeline offline,
or republish it into a Kafka topic for a live ``serve``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from distill.cli.common import bootstrap_option, config_option, load_or_exit

if TYPE_CHECKING:
    from rich.progress import Progress


@click.command(name="replay")
@config_option
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--chain", default=None, metavar="NAME",
              help="With a data-pack SOURCE: the chain, by index in drift_chains.json or as "
                   "'v1->v2'.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where drift_chains.json lies. [default: SOURCE's folder]")
@click.option("--seed", default=0, show_default=True, help="Seed of the pack's drift stream.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("replay-state"), show_default=True,
              help="A fresh state dir for checkpoint, archive, alerts and timeline.")
@click.option("--force", is_flag=True, help="Overwrite a previous replay in --state-dir.")
@click.option("--speed", type=float, default=None, metavar="X",
              help="Pace by produced_at / X (e.g. 60 = one hour per minute); default: full "
                   "speed.")
@click.option("--snapshot-every", default=500, show_default=True,
              help="Events between detector-summary snapshots in timeline.jsonl.")
@click.option("--to-topic", default=None, metavar="TOPIC",
              help="Republish the events into this Kafka topic instead of replaying offline "
                   "(a producer only; no consumer group is touched).")
@bootstrap_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the run summary here as JSON.")
def command(config_path: Path | None, source: Path, chain: str | None, data_dir: Path | None,
            seed: int, state_dir: Path, force: bool, speed: float | None, snapshot_every: int,
            to_topic: str | None, bootstrap_servers: str | None, json_out: Path | None) -> None:
    """Replay SOURCE: a serve state dir (or its archive/), a .jsonl.gz of events, or a
    data-pack file with --chain. The same input always gives the same alerts; `distill
    status --state-dir` and `distill report --state-dir` read the result."""
    from distill.monitor.replay import ReplaySourceError, StateDirNotEmpty, open_source

    cfg = load_or_exit(config_path)
    if speed is not None and speed < 0:
        raise click.BadParameter("must be >= 0", param_hint="--speed")
    try:
        src = open_source(source, chain, data_dir, seed)
    except (ReplaySourceError, ValueError, OSError) as exc:
        click.echo(f"distill replay: {exc}", err=True)
        sys.exit(2)
    if to_topic:
        summary = _republish(cfg, src, to_topic, bootstrap_servers, speed)
    else:
        try:
            summary = _offline(cfg, src, state_dir, force, speed, snapshot_every)
        except StateDirNotEmpty as exc:
            click.echo(f"distill replay: {exc}", err=True)
            sys.exit(2)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")


def _progress(total: int, label: str) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), transient=False, disable=total == 0)


def _offline(cfg: Any, src: Any, state_dir: Path, force: bool, speed: float | None,
             snapshot_every: int) -> dict[str, Any]:
    from rich.console import Console

    from distill.monitor.replay import Replay, prepare_state_dir
    from distill.monitor.service import pipeline_config

    prepare_state_dir(state_dir, force)
    embedder = cfg.detectors.embedder(state_dir)
    replay = Replay(state_dir, pipeline_config(cfg, embedder), snapshot_every)
    with _progress(len(src.events), "replay") as bar:
        task = bar.add_task("replay", total=len(src.events))
        summary = replay.run(src, speed, on_event=lambda i: bar.update(task, completed=i))
    console = Console(stderr=True)
    console.print(f"{summary['events']} events ({src.kind}) in {summary['seconds']} s: "
                  f"{summary['alerts']} alerts {summary['alerts_by_teacher']}, "
                  f"{summary['groups_completed']} groups completed, "
                  f"{summary['groups_timed_out']} timed out -> {state_dir}")
    return summary


def _republish(cfg: Any, src: Any, topic: str, bootstrap_servers: str | None,
               speed: float | None) -> dict[str, Any]:
    from contextlib import ExitStack

    from distill.kafka import kafka_settings
    from distill.monitor.replay import republish
    from stream.kafka import KafkaSink, ensure_topics

    servers = bootstrap_servers or cfg.kafka.bootstrap_servers
    if not servers:
        click.echo("distill replay: --to-topic needs --bootstrap-servers (or kafka."
                   "bootstrap_servers in the config)", err=True)
        sys.exit(2)
    settings = kafka_settings(cfg, servers)
    ensure_topics(settings, {topic: cfg.kafka.partitions})
    with ExitStack() as stack, _progress(len(src.events), f"-> {topic}") as bar:
        sink = KafkaSink(settings)
        stack.callback(sink.close)
        task = bar.add_task("publish", total=len(src.events))
        sent = republish(src, sink, topic, speed, on_event=lambda _: bar.advance(task))
    return {"source": str(src.path), "kind": src.kind, "topic": topic, "published": sent,
            "bootstrap_servers": servers}
