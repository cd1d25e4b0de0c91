"""`distill simulate`: produce a seeded multi-teacher stream with scheduled drifts."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from distill.cli.common import bootstrap_option, config_option, load_or_exit
from stream.events import TeacherEvent
from stream.exceptions import ScenarioInvalid
from stream.simulator import (
    PRODUCER_TUNING,
    change_points,
    changepoints_path,
    generate,
    load_scenario,
    packaged_scenarios,
    produce,
    write_changepoints,
    write_jsonl_gz,
)
from stream.simulator.scenario import Scenario

EPILOG = """\b
Examples:
  distill simulate --out sim.jsonl.gz                 # default scenario, seed 0
  distill simulate --scenario harsh --seed 3 --samples 500 --out harsh.jsonl.gz
  distill simulate --scenario my.toml --topic teacher-outputs \\
      --bootstrap-servers localhost:9092 --rate 200
"""


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]:>8.0f} ev/s"), TimeElapsedColumn(),
                    console=console, transient=False, disable=not console.is_terminal)


def _load(scenario: str, samples: int | None) -> Scenario:
    try:
        loaded = load_scenario(scenario)
        return loaded.with_samples(samples) if samples else loaded
    except ScenarioInvalid as exc:
        where = "" if exc.field == "<file>" else f"invalid scenario {scenario}: "
        click.echo(f"distill simulate: {where}{exc}", err=True)
        sys.exit(2)


@click.command(name="simulate", epilog=EPILOG)
@config_option
@click.option("--scenario", default="default", show_default=True, metavar="NAME|FILE",
              help="Packaged scenario name (default, paper_nodrift, harsh) or a TOML file.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Same scenario and seed give byte-identical events.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Number of cases (each answered by every teacher); default: the scenario's.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write events to this .jsonl.gz (change points go to X.changepoints.json).")
@click.option("--topic", default=None, help="Produce events to this Kafka topic instead.")
@bootstrap_option
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Events per second to Kafka; default: as fast as possible.")
@click.option("--partitions", type=click.IntRange(min=1), default=None,
              help="Partitions when the topic is created; default: kafka.partitions (config).")
@click.option("--changepoints", "changepoints_file",
              type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the ground-truth change points (JSON).")
@click.option("--hold", is_flag=True,
              help="With the embedded broker: keep it running after producing, until Ctrl-C.")
@click.option("--list", "list_only", is_flag=True, help="List the packaged scenarios and exit.")
@click.option("--images-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Multimodal mode: write two small study images per case here and reference "
                   "them from the events (serve.image_roots must include this directory).")
@click.option("--cue-rate", type=click.FloatRange(0, 1), default=None,
              help="Share of findings whose change the case text states; default: the "
                   "scenario's. 0 with --images-dir: only the images tell the answer.")
def command(config_path: Path | None, scenario: str, seed: int, samples: int | None,
            out: Path | None, topic: str | None, bootstrap_servers: str | None,
            rate: float | None, partitions: int | None, changepoints_file: Path | None,
            hold: bool, list_only: bool, images_dir: Path | None,
            cue_rate: float | None) -> None:
    """Produce a seeded multi-teacher stream with scheduled drifts.

    Simulated teachers compare a prior and a current chest radiograph (described in text)
    and grade five findings as improving, stable or worsening, each in its own writing
    style and with its own per-finding accuracy. The scenario schedules drifts: accuracy,
    verbosity, refusals, answer format and version swaps. The true change points are
    written next to the output so that detectors can be scored.

    Give exactly one of --out FILE.jsonl.gz or --topic T. With --topic and no bootstrap
    servers (flag or config), an embedded broker is started; it stops when this command
    exits (see --hold), so for a lasting stream point --bootstrap-servers at a cluster.
    A bad scenario file exits with status 2 and names the field.
    """
    if list_only:
        for name in packaged_scenarios():
            click.echo(f"{name:16s} {load_scenario(name).description}")
        return
    if (out is None) == (topic is None):
        raise click.UsageError("give exactly one of --out FILE.jsonl.gz or --topic T")
    loaded = _load(scenario, samples)
    if cue_rate is not None:
        from stream.simulator.images import with_cue_rate

        loaded = with_cue_rate(loaded, cue_rate)
    points = change_points(loaded)
    console = Console(stderr=True)
    total = loaded.samples * len(loaded.teachers)
    began = time.monotonic()
    with _progress(console) as progress:
        task = progress.add_task(loaded.name, total=total, rate=0.0)

        done = [0]
        sidecar: Path | None

        def tick(_event: TeacherEvent) -> None:
            done[0] += 1
            if done[0] % 100 == 0 or done[0] == total:
                elapsed = max(time.monotonic() - began, 1e-9)
                progress.update(task, completed=done[0], rate=done[0] / elapsed)

        if out is not None:
            count = write_jsonl_gz(generate(loaded, seed, images_dir), out, on_event=tick)
            sidecar = changepoints_file or changepoints_path(out)
            where = str(out)
        else:
            assert topic is not None
            count, where = _to_kafka(config_path, bootstrap_servers, topic, partitions, rate,
                                     generate(loaded, seed, images_dir), tick, hold)
            sidecar = changepoints_file
    if sidecar is not None:
        write_changepoints(points, sidecar)
    elapsed = time.monotonic() - began
    click.echo(f"{count} events ({loaded.samples} samples x {len(loaded.teachers)} teachers, "
               f"scenario {loaded.name}, seed {seed}) -> {where} in {elapsed:.1f} s "
               f"({count / max(elapsed, 1e-9):.0f} events/s)")
    if sidecar is not None:
        click.echo(f"{len(points)} change points -> {sidecar}")


def _to_kafka(config_path: Path | None, bootstrap: str | None, topic: str,
              partitions: int | None, rate: float | None, events: Iterator[TeacherEvent],
              tick: Callable[[TeacherEvent], None], hold: bool) -> tuple[int, str]:
    from stream.broker import EmbeddedBroker
    from stream.kafka import KafkaSettings, KafkaSink, ensure_topics

    cfg = load_or_exit(config_path, {"kafka": {"bootstrap_servers": bootstrap}})
    with contextlib.ExitStack() as stack:
        servers = cfg.kafka.bootstrap_servers
        if not servers:
            broker = stack.enter_context(EmbeddedBroker())
            servers = broker.bootstrap_servers
            click.echo(f"embedded broker at {servers}: it stops when this command exits"
                       f"{' (--hold keeps it until Ctrl-C)' if not hold else ''}; use "
                       "--bootstrap-servers for a lasting stream.", err=True)
        settings = KafkaSettings(bootstrap_servers=servers,
                                 session_timeout_ms=cfg.kafka.session_timeout_ms,
                                 heartbeat_interval_ms=cfg.kafka.heartbeat_interval_ms,
                                 security=cfg.kafka.security)
        ensure_topics(settings, {topic: partitions or cfg.kafka.partitions})
        sink = KafkaSink(settings, **PRODUCER_TUNING)
        stack.callback(sink.close)
        count = produce(events, sink, topic, rate=rate, on_event=tick)
        if hold and not cfg.kafka.bootstrap_servers:
            click.echo(f"holding the embedded broker at {servers}; Ctrl-C to stop.", err=True)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    return count, f"{servers}/{topic}"
