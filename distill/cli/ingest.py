"""`distill ingest`: JSONL teacher outputs (our format, OpenAI, Anthropic, any with --map) into
the input topic, keyed by sample_id, with deterministic event ids and a rejects file."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from distill.cli.common import bootstrap_option, client_settings, config_option, load_or_exit
from stream.formats import FORMATS

if TYPE_CHECKING:
    from rich.console import Console

    from distill.config import Config
    from stream.ingest import Line
    from stream.kafka import KafkaSettings


@click.command(name="ingest")
@click.argument("paths", nargs=-1)
@config_option
@bootstrap_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Input format; auto picks per line. [default: from config, auto]")
@click.option("--map", "mapping", multiple=True, metavar="FIELD=EXPR",
              help="Take an event field from a JMESPath expression into each record, e.g. "
                   "--map sample_id=request.metadata.case --map teacher=\"'gpt-4o'\" "
                   "(repeatable; overrides the format).")
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Rejected lines with their reason (JSONL). [default: ingest-rejects.jsonl]")
@click.option("--input-topic", default=None, help="Teacher-output topic.")
@click.option("--partitions", type=int, default=None,
              help="Partitions when the topic must be created.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr. [default: when stderr is a terminal]")
def command(paths: tuple[str, ...], config_path: Path | None, bootstrap_servers: str | None,
            fmt: str | None, mapping: tuple[str, ...], rejects: Path | None,
            input_topic: str | None, partitions: int | None, progress: bool | None) -> None:
    """Read PATHS (JSONL files, directories of them, or - for stdin; default stdin), convert
    each line to a teacher-output event and produce it to the input topic.

    Each line is checked with the monitor's own decoder; a line that fails goes to the
    rejects file with its reason, and the counts per reason are printed at the end (exit 1
    when any line was rejected). event_id is filled deterministically when absent, so
    ingesting the same file twice adds nothing (the monitor drops repeated ids).
    """
    cfg = load_or_exit(config_path, {
        "kafka": {"bootstrap_servers": bootstrap_servers, "input_topic": input_topic,
                  "partitions": partitions},
        "ingest": {"format": fmt, "rejects": rejects},
    })
    from stream.formats import parse_mapping

    try:
        field_map = parse_mapping({**cfg.ingest.map, **parse_mapping(mapping)})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    settings = client_settings(cfg, "distill-ingest")
    from stream.exceptions import StreamError

    try:
        code = _run(cfg, settings, list(paths) or ["-"], field_map, progress)
    except StreamError as exc:  # no broker, or it did not acknowledge: nothing to resume
        raise click.ClickException(f"{exc}; ingesting again is safe (event ids repeat)"
                                   ) from exc
    sys.exit(code)


def _run(cfg: Config, settings: KafkaSettings, paths: list[str], field_map: dict[str, str],
         progress: bool | None) -> int:
    from rich.console import Console

    from stream.ingest import ingest_lines, input_files, read_lines
    from stream.producer import TeacherProducer

    console = Console(stderr=True)
    try:
        files = input_files(paths)
    except FileNotFoundError as exc:
        console.print(f"distill ingest: {exc}")
        return 2
    k = cfg.kafka
    producer = TeacherProducer(settings, topic=k.input_topic,
                               max_message_bytes=cfg.serve.max_message_bytes,
                               partitions=k.partitions, linger_ms=20)
    show = console.is_terminal if progress is None else progress
    with producer, open(cfg.ingest.rejects, "wb") as rejects, \
            _progress(console, files, show) as advance:
        report = ingest_lines(read_lines(files), producer.send_event, rejects,
                              cfg.ingest.format, field_map, cfg.serve.max_message_bytes,
                              on_line=advance)
    console.print(f"sent {report.sent} events to {k.input_topic} from {report.lines} lines; "
                  f"{report.rejected_total} rejected")
    for reason, count in report.rejected.most_common():
        console.print(f"  {count:>8}  {reason}")
    if report.rejected_total:
        console.print(f"rejected lines and their reasons: {cfg.ingest.rejects}")
    return 1 if report.rejected_total else 0


@contextmanager
def _progress(console: Console, files: list[Path | None], show: bool
              ) -> Iterator[Callable[[Line], None]]:
    """A rich progress bar over the input bytes (a spinner for stdin); a no-op when hidden."""
    if not show:
        yield lambda line: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn

    total = None if None in files else sum(p.stat().st_size for p in files if p is not None)
    with Progress(SpinnerColumn(), TextColumn("ingest"), BarColumn(), DownloadColumn(),
                  TextColumn("{task.fields[lines]} lines"), console=console) as bar:
        task = bar.add_task("ingest", total=total, lines=0)
        count = 0

        def advance(line: Line) -> None:
            nonlocal count
            count += 1
            bar.update(task, advance=len(line.text) + 1, lines=count)

        yield advance
