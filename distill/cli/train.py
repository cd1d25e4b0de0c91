"""`distill train`: the continual APO trainer (``--follow`` consumes the groups topic).

Also ``--init-tiny DIR`` (build a tiny offline student for demos and tests) and
``--rollback VERSION`` (serve an earlier registered version again). The round options are
shared with ``distill retrain``, which runs the same round by hand.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from distill.cli.common import bootstrap_option, config_option, default, load_or_exit
from distill.config import Config

F = Callable[..., Any]


def round_options(f: F) -> F:
    """Flags of one round, shared by ``train`` and ``retrain``."""
    opts = [
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
                     help="Newest versions whose weights stay on disk (the current and the "
                          "reference version always do)."),
        click.option("--apo", "apo_fields", multiple=True, metavar="FIELD=VALUE",
                     help="Any APOConfig field, e.g. --apo loss_type=dpo_pairwise "
                     "--apo weighting=drift --apo lora=false (values parsed as JSON)."),
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


def round_settings(cfg: Config, steps: int | None, max_new_groups: int | None,
                   replay_fraction: float | None, tolerance: float | None,
                   keep_rejected: bool, apo_fields: tuple[str, ...],
                   keep_versions: int = 5) -> Any:
    from distill.trainer.round import RoundSettings

    t = cfg.train
    settings = RoundSettings(
        steps=steps or t.steps, max_new_groups=max_new_groups or t.max_new_groups,
        replay_fraction=t.replay_fraction if replay_fraction is None else replay_fraction,
        tolerance=t.gate_tolerance if tolerance is None else tolerance,
        keep_rejected=keep_rejected, keep_versions=keep_versions,
        apo=parse_apo_fields(apo_fields))
    return settings


def check_apo(settings: Any) -> None:
    """Fail at start (usage error, exit 2) on a bad --apo field; imports transformers."""
    from distill.trainer.round import ApoEngine

    problem = ApoEngine().check(settings)
    if problem:
        raise click.BadParameter(problem, param_hint="--apo")


def state_dir_of(cfg: Config, state_dir: Path | None) -> Path:
    return Path(state_dir) if state_dir is not None else Path(cfg.serve.state_dir)


def do_rollback(state_dir: Path, version: str) -> None:
    from distill.trainer.exceptions import TrainerError
    from distill.trainer.registry import Registry
    from distill.trainer.round import TrainerPaths

    paths = TrainerPaths(state_dir)
    if not paths.registry_file.exists():
        click.echo(f"distill: no registry under {paths.registry}", err=True)
        sys.exit(2)
    try:
        v = Registry(paths.registry).rollback(None if version == "parent" else version)
    except TrainerError as exc:
        click.echo(f"distill: rollback refused: {exc}", err=True)
        sys.exit(2)
    click.echo(f"current student is now {v.version}")


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
            keep_versions: int, apo_fields: tuple[str, ...], follow: bool,
            retrain_webhook: bool, group_id: str | None,
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
    """
    cfg = load_or_exit(config_path, {
        "kafka": {"bootstrap_servers": bootstrap_servers},
        "train": {"student": student, "group_id": group_id, "metrics_address": metrics_address,
                  "trigger_every_groups": trigger_every_groups,
                  "trigger_every_s": trigger_every_s, "trigger_on_alert": trigger_on_alert},
    })
    state = state_dir_of(cfg, state_dir)
    if init_tiny is not None:
        build_tiny(init_tiny, "default", seed)
        return
    if rollback is not None:
        do_rollback(state, rollback)
        return
    settings = round_settings(cfg, steps, max_new_groups, replay_fraction, tolerance,
                              keep_rejected, apo_fields, keep_versions)
    check_apo(settings)
    sys.exit(_follow(cfg, state, settings, follow, max_rounds, max_seconds, retrain_webhook))


def _follow(cfg: Config, state: Path, settings: Any, follow: bool, max_rounds: int | None,
            max_seconds: float | None, retrain_webhook: bool = False) -> int:
    from prometheus_client import CollectorRegistry

    from distill.http import TokenRequired, http_options, start_http_server
    from distill.logs import setup_logging
    from distill.metrics import TrainerMetrics
    from distill.trainer.follow import Follower, FollowSettings
    from distill.trainer.registry import Registry
    from distill.trainer.round import TrainerPaths
    from distill.trainer.triggers import TriggerPolicy
    from stream.kafka import KafkaSettings, KafkaSource, ensure_topics

    setup_logging(cfg.serve.log_format)
    k, t = cfg.kafka, cfg.train
    if not k.bootstrap_servers:
        click.echo("distill train: needs --bootstrap-servers (the cluster `distill serve` "
                   "writes groups to)", err=True)
        return 2
    paths = TrainerPaths(state)
    if t.student is None and Registry(paths.registry).reference() is None:
        click.echo("distill train: no reference model registered yet: pass --student DIR",
                   err=True)
        return 2
    kafka = KafkaSettings(k.bootstrap_servers, client_id="distill-trainer",
                          session_timeout_ms=k.session_timeout_ms,
                          heartbeat_interval_ms=k.heartbeat_interval_ms, security=k.security)
    ensure_topics(kafka, {k.groups_topic: k.partitions, k.alerts_topic: 1})
    fs = FollowSettings(
        groups_topic=k.groups_topic, alerts_topic=k.alerts_topic, group_id=t.group_id,
        policy=TriggerPolicy(t.trigger_every_groups, t.trigger_every_s, t.trigger_on_alert),
        round=settings, buffer_max_groups=t.buffer_max_groups, probe_fraction=t.probe_fraction)
    registry = CollectorRegistry()
    metrics = TrainerMetrics(registry)
    source = KafkaSource(kafka, [fs.groups_topic, fs.alerts_topic], fs.group_id)
    follower = Follower(paths, fs, source, student=t.student, metrics=metrics,
                        on_round=lambda o: click.echo(
                            f"round {o.run_id}: {o.status} {o.version or ''} {o.reason}",
                            err=True))
    with ExitStack() as stack:
        routes = {"/-/retrain": follower.webhook} if retrain_webhook else None
        try:
            server = start_http_server(t.metrics_address, registry, follower.health, routes,
                                       **http_options(cfg.http))
        except (TokenRequired, ValueError) as exc:
            click.echo(f"distill train: {exc}", err=True)
            return 2
        stack.callback(server.shutdown)
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.signal(sig, lambda *_: follower.stop())
            stack.callback(signal.signal, sig, previous)
        outcomes = follower.run(timeout_s=max_seconds, max_rounds=max_rounds,
                                until_idle=not follow)
    return 1 if outcomes and outcomes[-1].status == "failed" else 0
