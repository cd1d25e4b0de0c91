"""`distill train`: the continual APO trainer (``--follow`` consumes the groups topic).

Also ``--init-tiny DIR`` (build a tiny offline student for demos and tests) and
``--rollback VERSION`` (serve an earlier registered version again). The daemon itself is
:class:`distill.trainer.service.TrainerService`; this file parses and calls.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from distill.cli.common import (
    bootstrap_option,
    config_option,
    default,
    load_or_exit,
    rollback_or_exit,
    round_options,
    settings_or_exit,
)


def build_tiny(out_dir: Path, scenario: str, seed: int) -> None:
    """A tiny Qwen2-shaped student whose BPE is trained on simulated teacher text."""
    from itertools import islice

    from distill.apo.tiny import build_tiny_student
    from stream.simulator import generate, load_scenario

    events = list(islice(generate(load_scenario(scenario), seed=seed), 2000))
    texts = [t for e in events for t in (e.prompt or "", e.output)]
    build_tiny_student(out_dir, texts, seed=seed)
    click.echo(f"tiny student written to {out_dir}")


@click.command(name="train")
@config_option
@bootstrap_option
@round_options
@click.option("--follow/--no-follow", default=False,
              help="Keep consuming and training until stopped; without it, drain the topics, "
                   "run any round that is due, and exit.")
@click.option("--retrain-webhook/--no-retrain-webhook", default=False,
              help="Accept Alertmanager webhooks on POST /-/retrain of the metrics address: a "
                   "firing DriftDetected, DriftSustained, SeveralTeachersDrifting, "
                   "StudentRegressed or RetrainStale queues a round (trigger 'webhook').")
@click.option("--group-id", default=None,
              help=f"Consumer group. {default('train', 'group_id')}")
@click.option("--metrics-address", default=None, metavar="HOST:PORT",
              help=f"/metrics and /healthz. {default('train', 'metrics_address')}")
@click.option("--trigger-every-groups", type=click.IntRange(min=1), default=None,
              help=f"A round every K new groups. {default('train', 'trigger_every_groups')}")
@click.option("--trigger-every-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="A round every T seconds (if anything is new). "
                   f"{default('train', 'trigger_every_s')}")
@click.option("--trigger-on-alert/--no-trigger-on-alert", default=None,
              help=f"A drift alert starts a round. {default('train', 'trigger_on_alert')}")
@click.option("--max-rounds", type=click.IntRange(min=1), default=None,
              help="Exit after this many rounds.")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Exit after this long.")
@click.option("--init-tiny", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build a tiny offline student into DIR (tokenizer trained on simulated "
                   "teacher text) and exit.")
@click.option("--rollback", default=None, metavar="VERSION|parent",
              help="Make VERSION (or the current version's parent) current again and exit.")
@click.option("--seed", type=int, default=0, help="Seed for --init-tiny.")
def command(config_path: Path | None, bootstrap_servers: str | None, state_dir: Path | None,
            student: Path | None, steps: int | None, max_new_groups: int | None,
            replay_fraction: float | None, tolerance: float | None, keep_rejected: bool,
            keep_versions: int, apo_fields: tuple[str, ...], log_format: str | None,
            follow: bool, retrain_webhook: bool, group_id: str | None,
            metrics_address: str | None, trigger_every_groups: int | None,
            trigger_every_s: float | None, trigger_on_alert: bool | None,
            max_rounds: int | None, max_seconds: float | None, init_tiny: Path | None,
            rollback: str | None, seed: int) -> None:
    """Run the continual APO trainer.

    Consumes the groups topic in its own consumer group, keeps a bounded durable buffer
    (SQLite) and commits offsets only once the groups are on disk. A round (synthesis, APO
    steps on new groups plus replayed older ones, an evaluation gate on a held-out probe)
    runs every K new groups, every T seconds, or on a drift alert, and promotes the new
    model only if it is not worse. The first round bootstraps the reference from --student.
    Progress (steps, loss, ETA) is a bar on a terminal and log lines otherwise; SIGTERM
    stops a round at the next step boundary (recorded as interrupted) and exits.
    """
    cfg = load_or_exit(config_path, {
        "kafka": {"bootstrap_servers": bootstrap_servers},
        "serve": {"state_dir": state_dir, "log_format": log_format},
        "train": {"student": student, "group_id": group_id, "metrics_address": metrics_address,
                  "trigger_every_groups": trigger_every_groups,
                  "trigger_every_s": trigger_every_s, "trigger_on_alert": trigger_on_alert},
    })
    from distill.logs import setup_logging

    setup_logging(cfg.serve.log_format)
    state = Path(cfg.serve.state_dir)
    if init_tiny is not None:
        build_tiny(init_tiny, "default", seed)
        return
    if rollback is not None:
        rollback_or_exit(state, rollback)
        return
    settings = settings_or_exit(cfg, steps, max_new_groups, replay_fraction, tolerance,
                                keep_rejected, keep_versions, apo_fields)
    from distill.trainer.exceptions import TrainerError
    from distill.trainer.handoff import FollowerRunningError
    from distill.trainer.progress import make_view
    from distill.trainer.service import FollowLimits, TrainerService

    service = TrainerService(cfg, state, settings, view=make_view(cfg.serve.log_format),
                             retrain_webhook=retrain_webhook)
    try:
        code = service.run(FollowLimits(follow, max_rounds, max_seconds))
    except (TrainerError, FollowerRunningError) as exc:
        click.echo(f"distill train: {exc}", err=True)
        sys.exit(2)
    sys.exit(code)
