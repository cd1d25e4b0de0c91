"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from distill.config import Config, ConfigInvalid, load_config

F = Callable[..., Any]


def default(section: str, name: str, shown: str | None = None) -> str:
    """``[default: X]`` for a flag's help, X read from the config model (never a copy).
    ``shown`` replaces X where the raw value would mislead (e.g. an empty list)."""
    value = getattr(Config.model_fields[section].default, name)
    if shown is None:
        shown = "on" if value is True else "off" if value is False else str(value)
    return f"[default: {shown}]"


def config_option(f: F) -> F:
    return click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                        default=None, help="TOML config file.")(f)


def bootstrap_option(f: F) -> F:
    return click.option("--bootstrap-servers", default=None, metavar="HOST:PORT[,..]",
                        help="Kafka cluster; default: start the embedded broker.")(f)


def load_or_exit(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Load the config or exit 2 with each bad field named."""
    cfg = load_config(path, overrides=_drop_none(overrides or {}))
    if isinstance(cfg, ConfigInvalid):
        click.echo(f"distill: {cfg}", err=True)
        sys.exit(2)
    return cfg


def not_built(name: str) -> NoReturn:
    click.echo(f"distill {name}: not built yet in this version.", err=True)
    sys.exit(2)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _drop_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def client_settings(cfg: Config, client_id: str) -> Any:
    """KafkaSettings of a command that produces to the configured cluster (ingest, gateway)."""
    from stream.kafka import KafkaSettings

    k = cfg.kafka
    if not k.bootstrap_servers:
        raise click.UsageError("needs --bootstrap-servers (the cluster `distill serve` reads; "
                               "an embedded broker would die with this command)")
    return KafkaSettings(k.bootstrap_servers, client_id=client_id, security=k.security,
                         client=k.client)
