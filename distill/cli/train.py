"""`distill train`: Run the continual APO trainer (--follow consumes the groups topic)."""

from __future__ import annotations

import click

from distill.cli.common import config_option, not_built


@click.command(name="train")
@config_option
def command(config_path: object) -> None:
    """Run the continual APO trainer (--follow consumes the groups topic).

    Not built yet in this version: exits with status 2.
    """
    not_built("train")
