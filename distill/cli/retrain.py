"""`distill retrain`: Run one training round by hand over the stored groups."""

from __future__ import annotations

import click

from distill.cli.common import config_option, not_built


@click.command(name="retrain")
@config_option
def command(config_path: object) -> None:
    """Run one training round by hand over the stored groups.

    Not built yet in this version: exits with status 2.
    """
    not_built("retrain")
