"""`distill bench`: Benchmarks: detection on real version switches, distillation, consensus."""

from __future__ import annotations

import click

from distill.cli.common import config_option, not_built


@click.command(name="bench")
@config_option
def command(config_path: object) -> None:
    """Benchmarks: detection on real version switches, distillation, consensus.

    Not built yet in this version: exits with status 2.
    """
    not_built("bench")
