"""`distill serve`: the monitor daemon."""

from __future__ import annotations

from pathlib import Path

import click

from distill.cli.common import bootstrap_option, config_option, default, load_or_exit
from stream.kafka import CLIENTS


@click.command(name="serve")
@config_option
@bootstrap_option
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Checkpoints and the group archive. {default('serve', 'state_dir')}")
@click.option("--metrics-address", default=None, metavar="HOST:PORT",
              help=f"Where /metrics and /healthz listen. {default('serve', 'metrics_address')}")
@click.option("--group-id", default=None,
              help=f"Consumer group. {default('kafka', 'group_id')}")
@click.option("--input-topic", default=None,
              help=f"Teacher-output topic. {default('kafka', 'input_topic')}")
@click.option("--partitions", type=int, default=None,
              help=f"Partitions for topics the service creates. {default('kafka', 'partitions')}")
@click.option("--kafka-client", type=click.Choice(CLIENTS), default=None,
              help="Kafka client library; librdkafka needs the 'librdkafka' extra. "
                   f"{default('kafka', 'client')}")
@click.option("--expected-teachers", default=None, metavar="A,B,..",
              help="Teachers a group waits for. "
                   f"{default('serve', 'expected_teachers', 'learned from the stream')}")
@click.option("--checkpoint-every", type=int, default=None,
              help=f"Events between checkpoints. {default('serve', 'checkpoint_every')}")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help=f"Log lines as text or JSON. {default('serve', 'log_format')}")
@click.option("--max-records", type=int, default=None,
              help="Stop after this many records (tests, batch runs).")
@click.option("--idle-exit", type=float, default=None, metavar="SECONDS",
              help="Stop once nothing arrived for this long (tests, batch runs).")
@click.option("--demo", is_flag=True,
              help="Embedded broker + simulator (default drift scenario) + this monitor; "
                   "prints alerts live and a per-teacher summary, then exits.")
@click.option("--scenario", default="default", help="Simulator scenario for --demo.")
@click.option("--seed", type=int, default=0, help="Simulator seed for --demo.")
def command(config_path: Path | None, bootstrap_servers: str | None, state_dir: Path | None,
            metrics_address: str | None, group_id: str | None, input_topic: str | None,
            partitions: int | None, kafka_client: str | None, expected_teachers: str | None,
            checkpoint_every: int | None, log_format: str | None, max_records: int | None,
            idle_exit: float | None, demo: bool, scenario: str, seed: int) -> None:
    """Run the monitor: consume teacher outputs as a consumer group, detect drift per
    teacher, emit alerts and completed teacher groups, checkpoint state with the offsets it
    covers, and expose Prometheus metrics and /healthz.

    Bad messages go to the dead-letter topic with a reason. SIGTERM/SIGINT finish the
    records in hand, checkpoint, commit and exit. With no --bootstrap-servers an embedded
    Kafka-protocol broker is started (its storage dies with the process).
    """
    cfg = load_or_exit(config_path, {
        "kafka": {"bootstrap_servers": bootstrap_servers, "group_id": group_id,
                  "input_topic": input_topic, "partitions": partitions,
                  "client": kafka_client},
        "serve": {"state_dir": state_dir, "metrics_address": metrics_address,
                  "checkpoint_every": checkpoint_every, "log_format": log_format,
                  "expected_teachers": expected_teachers.split(",") if expected_teachers
                  else None},
    })
    from distill.logs import setup_logging

    setup_logging(cfg.serve.log_format)
    if demo:
        from distill.monitor.demo import run_demo

        raise SystemExit(run_demo(cfg, scenario, seed))
    from distill.exceptions import (
        CheckpointUnreadable,
        OffsetOutOfRange,
        ServeSetupError,
        ServeStalled,
    )
    from distill.monitor.service import MonitorService, RunLimits
    from stream.exceptions import FatalClientError, StreamError
    from stream.kafka import LibrdkafkaMissing

    service = MonitorService(cfg, limits=RunLimits(max_records, idle_exit))
    try:
        summary = service.run()
    except CheckpointUnreadable as exc:
        raise click.ClickException(f"cannot restore a checkpoint: {exc}") from exc
    except ServeStalled as exc:
        raise click.ClickException(f"serve stalled: {exc}; restart it, it resumes from its "
                                   f"checkpoint") from exc
    except LibrdkafkaMissing as exc:
        raise click.ClickException(str(exc)) from exc
    except FatalClientError as exc:
        raise click.ClickException(f"{exc}; restart serve, it resumes from its checkpoint"
                                   ) from exc
    except (ServeSetupError, OffsetOutOfRange) as exc:
        raise click.ClickException(str(exc)) from exc
    except StreamError as exc:  # no broker, the embedded one did not start, ...
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    click.echo(f"processed {summary.records} records, {summary.dead_lettered} dead-lettered, "
               f"{summary.alerts_total} alerts, {summary.checkpoints} checkpoints", err=True)
