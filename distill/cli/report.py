"""`distill report`: Draw drift timelines and training curves as PNG and one HTML page."""

from __future__ import annotations

import click

from distill.cli.common import config_option, not_built


@click.command(name="report")
@config_option
def command(config_path: object) -> None:
    """Draw drift timelines and training curves as PNG and one HTML page.

    Not built yet in this version: exits with status 2.
    """
    not_built("report")
