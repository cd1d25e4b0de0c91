"""`distill simulate`: Produce a seeded multi-teacher stream with scheduled drifts."""

from __future__ import annotations

import click

from distill.cli.common import config_option, not_built


@click.command(name="simulate")
@config_option
def command(config_path: object) -> None:
    """Produce a seeded multi-teacher stream with scheduled drifts.

    Not built yet in this version: exits with status 2.
    """
    not_built("simulate")
