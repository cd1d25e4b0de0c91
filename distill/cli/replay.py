"""`distill replay`: Run an archived stream through the monitor pipeline offline."""

from __future__ import annotations

import click

from distill.cli.common import config_option, not_built


@click.command(name="replay")
@config_option
def command(config_path: object) -> None:
    """Run an archived stream through the monitor pipeline offline.

    Not built yet in this version: exits with status 2.
    """
    not_built("replay")
