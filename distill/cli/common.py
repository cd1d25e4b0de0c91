"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import json
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


def log_format_option(f: F) -> F:
    return click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
                        help="Log lines as text or one JSON object per line (library output "
                             "and progress included). "
                             f"{default('serve', 'log_format')}")(f)


def round_options(f: F) -> F:
    """Flags of one training round, shared by ``train`` and ``retrain``."""
    opts: list[Callable[[F], F]] = [
        click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                     default=None, help="Service state dir (trainer/ and archive/ inside). "
                     f"{default('serve', 'state_dir')}"),
        click.option("--student", type=click.Path(file_okay=False, exists=True,
                                                  path_type=Path), default=None,
                     help="Local Hugging Face model dir; bootstraps the reference when the "
                     "registry has none."),
        click.option("--steps", type=click.IntRange(min=1), default=None,
                     help=f"APO optimizer steps per round. {default('train', 'steps')}"),
        click.option("--max-new-groups", type=click.IntRange(min=1), default=None,
                     help="New groups trained on per round. "
                     f"{default('train', 'max_new_groups')}"),
        click.option("--replay-fraction", type=click.FloatRange(0, 4), default=None,
                     help="Replayed older groups per new group. "
                     f"{default('train', 'replay_fraction')}"),
        click.option("--tolerance", type=click.FloatRange(min=0), default=None,
                     help="Promote when probe score >= current - tolerance. "
                     f"{default('train', 'gate_tolerance')}"),
        click.option("--keep-rejected", is_flag=True, default=False,
                     help="Keep the weights of candidates the gate rejected."),
        click.option("--keep-versions", type=click.IntRange(min=1), default=5,
                     show_default=True,
                     help="Newest versions whose weights stay on disk (the current and the "
                          "reference version always do)."),
        click.option("--apo", "apo_fields", multiple=True, metavar="FIELD=VALUE",
                     help="Any APOConfig field, e.g. --apo loss_type=dpo_pairwise "
                     "--apo weighting=drift --apo lora=false (values parsed as JSON)."),
        log_format_option,
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def parse_apo_fields(items: tuple[str, ...]) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs; VALUE is JSON when it parses (numbers, true/false), else text.

    >>> parse_apo_fields(("beta=0.2", "lora=false", "weighting=drift"))
    {'beta': 0.2, 'lora': False, 'weighting': 'drift'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not FIELD=VALUE", param_hint="--apo")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def load_or_exit(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Load the config or exit 2 with each bad field named."""
    cfg = load_config(path, overrides=_drop_none(overrides or {}))
    if isinstance(cfg, ConfigInvalid):
        click.echo(f"distill: {cfg}", err=True)
        sys.exit(2)
    return cfg


def rollback_or_exit(state: Path, version: str) -> None:
    """``--rollback`` of ``train`` and ``retrain``: exit 2 with the reason when refused."""
    from distill.trainer.exceptions import TrainerError
    from distill.trainer.service import rollback

    try:
        v = rollback(state, version)
    except TrainerError as exc:
        click.echo(f"distill: rollback refused: {exc}", err=True)
        sys.exit(2)
    click.echo(f"current student is now {v.version}")


def settings_or_exit(cfg: Any, steps: int | None, max_new_groups: int | None,
                     replay_fraction: float | None, tolerance: float | None,
                     keep_rejected: bool, keep_versions: int,
                     apo_fields: tuple[str, ...]) -> Any:
    """The round settings; a bad ``--apo`` field is a usage error (exit 2) at start."""
    from distill.trainer.service import check_apo, round_settings

    try:
        settings = round_settings(cfg, steps=steps, max_new_groups=max_new_groups,
                                  replay_fraction=replay_fraction, tolerance=tolerance,
                                  keep_rejected=keep_rejected, keep_versions=keep_versions,
                                  apo=parse_apo_fields(apo_fields))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--apo") from None
    problem = check_apo(settings)
    if problem:
        raise click.BadParameter(problem, param_hint="--apo")
    return settings


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
