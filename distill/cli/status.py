"""`distill status`: Show what the monitor and trainer hold: counts, detectors, alerts, versions."""

from __future__ import annotations

import click

from distill.cli.common import config_option, not_built


@click.command(name="status")
@config_option
def command(config_path: object) -> None:
    """Show what the monitor and trainer hold: counts, detectors, alerts, versions.

    Not built yet in this version: exits with status 2.
    """
    not_built("status")
