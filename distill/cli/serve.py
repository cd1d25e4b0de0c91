"""`distill serve`: Run the monitor: Kafka in, drift alerts and teacher groups out."""

from __future__ import annotations

import click

from distill.cli.common import config_option, not_built


@click.command(name="serve")
@config_option
def command(config_path: object) -> None:
    """Run the monitor: Kafka in, drift alerts and teacher groups out.

    Not built yet in this version: exits with status 2.
    """
    not_built("serve")
