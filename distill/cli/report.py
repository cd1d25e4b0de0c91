"""`distill report`: draw drift timelines and training curves as PNG and one HTML page."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command(name="report")
@click.option("--state-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="A replay or serve state dir (timeline, alerts, registry).")
@click.option("--bench-json", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A `distill bench distill|consensus --json` result.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("report"), show_default=True,
              help="Folder for the PNGs and index.html.")
def command(state_dir: Path | None, bench_json: Path | None, out_dir: Path) -> None:
    """PNG figures (signal estimates with drift markers and true change points, alert
    timeline, training loss / reward margin / eval score, accuracy heat map) and one
    self-contained HTML page embedding them."""
    if state_dir is None and bench_json is None:
        click.echo("distill report: give --state-dir and/or --bench-json", err=True)
        sys.exit(2)
    from distill.report import make_report

    made = make_report(out_dir, state_dir, bench_json)
    for path in made["figures"]:
        click.echo(path)
    click.echo(made["html"])
    if not made["figures"]:
        click.echo("distill report: nothing to draw (no timeline, alerts, rounds or table)",
                   err=True)
        sys.exit(1)
