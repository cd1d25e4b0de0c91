"""The trainer service: the follower daemon (`distill train`) and a round by hand
(`distill retrain`), from a parsed config to an outcome. The CLI files only parse and call.

The daemon wires the pieces of :mod:`distill.trainer.follow` together: the Kafka source
(settings from the config, :func:`distill.kafka.kafka_settings`), ``/metrics`` and
``/healthz`` (and the Alertmanager webhook), SIGTERM/SIGINT (the first ends polling and asks
a running round to stop at its next step boundary; a second one kills), and a startup line
saying what it listens to. Poll failures are retried with the policy `distill serve` uses
(:mod:`distill.retry`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.trainer.exceptions import NoStudentError, TrainerError
from distill.trainer.handoff import follower_info, request_round
from distill.trainer.round import RoundOutcome, RoundSettings, TrainerPaths, new_run_id

if TYPE_CHECKING:
    from distill.config import Config
    from distill.trainer.progress import View
    from distill.trainer.registry import Version

log = logging.getLogger(__name__)


class UsageError(TrainerError):
    """The trainer cannot start as asked (no broker, no student); exit status 2."""


def round_settings(cfg: Config, *, steps: int | None = None,
                   max_new_groups: int | None = None, replay_fraction: float | None = None,
                   tolerance: float | None = None, keep_rejected: bool = False,
                   keep_versions: int = 5, apo: dict[str, Any] | None = None) -> RoundSettings:
    """One round's settings: the flags given, else the ``[train]`` config (the source of
    every training default). The images are read under ``serve.image_roots``, the roots the
    monitor confines references to (one list for both services, so not an ``--apo`` field).
    """
    if apo and "image_roots" in apo:
        raise ValueError("image_roots: set serve.image_roots in the config (or "
                         "DISTILL_SERVE__IMAGE_ROOTS); the monitor and the trainer share it")
    t = cfg.train
    return RoundSettings(
        steps=steps or t.steps, max_new_groups=max_new_groups or t.max_new_groups,
        replay_fraction=t.replay_fraction if replay_fraction is None else replay_fraction,
        tolerance=t.gate_tolerance if tolerance is None else tolerance,
        keep_rejected=keep_rejected, keep_versions=keep_versions,
        bootstrap_max_groups=t.bootstrap_max_groups,
        apo={"synthesis_max_new_tokens": t.synthesis_max_new_tokens,
             "image_roots": list(cfg.serve.image_roots), **(apo or {})})


def check_apo(settings: RoundSettings) -> str | None:
    """Why the ``--apo`` fields cannot work, or None (imports transformers)."""
    from distill.trainer.round import ApoEngine

    return ApoEngine().check(settings)


def rollback(state: Path, version: str) -> Version:
    """Make ``version`` (or ``"parent"``) current again; raises :class:`TrainerError`."""
    from distill.trainer.registry import Registry

    paths = TrainerPaths(state)
    if not (paths.registry / "registry.json").exists():
        raise UsageError(f"no registry under {paths.registry}")
    return Registry(paths.registry).rollback(None if version == "parent" else version)


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM/SIGINT call ``stop`` once; a second signal gets the default action (kill)."""
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, _frame: Any) -> None:
        log.warning("%s: stopping at the next step boundary (send it again to kill)",
                    signal.Signals(signum).name)
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is not signal.SIG_IGN else old)
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class FollowLimits:
    """When the daemon exits besides a signal (tests, batch runs)."""

    follow: bool = True  # False: drain the topics, run any round due, exit
    max_rounds: int | None = None
    max_seconds: float | None = None


class TrainerService:
    """`distill train`: consume the groups and alerts topics, train when a trigger fires."""

    def __init__(self, cfg: Config, state: Path, settings: RoundSettings,
                 view: View | None = None, retrain_webhook: bool = False) -> None:
        self.cfg, self.state, self.settings = cfg, Path(state), settings
        self.view, self.retrain_webhook = view, retrain_webhook
        self.paths = TrainerPaths(self.state)

    def run(self, limits: FollowLimits = FollowLimits()) -> int:
        """Exit status: 0, or 1 when the last round failed."""
        from prometheus_client import CollectorRegistry

        from distill.http import TokenRequired, http_options, start_http_server
        from distill.kafka import kafka_settings
        from distill.metrics import TrainerMetrics
        from distill.trainer.follow import Follower, FollowSettings
        from distill.trainer.registry import Registry
        from distill.trainer.triggers import TriggerPolicy
        from stream.kafka import ensure_topics, open_source

        k, t = self.cfg.kafka, self.cfg.train
        if not k.bootstrap_servers:
            raise UsageError("needs --bootstrap-servers (the cluster `distill serve` writes "
                             "groups to)")
        if t.student is None and Registry(self.paths.registry).reference() is None:
            raise NoStudentError("no reference model registered yet: pass --student DIR")
        kafka = kafka_settings(self.cfg, k.bootstrap_servers, client_id="distill-trainer")
        ensure_topics(kafka, {k.groups_topic: k.partitions, k.alerts_topic: 1})
        policy = TriggerPolicy(t.trigger_every_groups, t.trigger_every_s, t.trigger_on_alert)
        fs = FollowSettings(groups_topic=k.groups_topic, alerts_topic=k.alerts_topic,
                            group_id=t.group_id, policy=policy, round=self.settings,
                            buffer_max_groups=t.buffer_max_groups,
                            probe_fraction=t.probe_fraction,
                            min_group_answers=t.min_group_answers)
        registry = CollectorRegistry()
        metrics = TrainerMetrics(registry)
        topics = [t for t in (fs.groups_topic, fs.alerts_topic) if t]
        source = open_source(kafka, topics, fs.group_id)
        follower = Follower(self.paths, fs, source, student=t.student, metrics=metrics,
                            view=self.view)
        with ExitStack() as stack:
            routes = {"/-/retrain": follower.webhook} if self.retrain_webhook else None
            try:
                server = start_http_server(t.metrics_address, registry, follower.health,
                                           routes, **http_options(self.cfg.http))
            except (TokenRequired, ValueError) as exc:
                source.close()
                follower.buffer.close()
                raise UsageError(str(exc)) from exc
            stack.callback(server.shutdown)
            stack.enter_context(stop_on_signals(follower.stop))
            self._announce(kafka.bootstrap_servers, kafka.client, fs, server)
            outcomes = follower.run(timeout_s=limits.max_seconds, max_rounds=limits.max_rounds,
                                    until_idle=not limits.follow)
        return 1 if outcomes and outcomes[-1].status == "failed" else 0

    def _announce(self, servers: str, client: str, fs: Any, server: Any) -> None:
        p = fs.policy
        triggers = [f"every {p.every_groups} new groups", f"every {p.every_s:g} s"]
        if p.on_alert:
            triggers.append("on drift alerts")
        if self.retrain_webhook:
            triggers.append("on Alertmanager webhooks")
        log.info("trainer following %s (groups) and %s (alerts) on %s as consumer group %s "
                 "(%s); rounds %s; state %s; metrics on http://%s:%d/metrics",
                 fs.groups_topic, fs.alerts_topic, servers, fs.group_id, client,
                 ", ".join(triggers), self.state, server.host, server.port,
                 extra={"groups_topic": fs.groups_topic, "alerts_topic": fs.alerts_topic,
                        "bootstrap_servers": servers, "group_id": fs.group_id,
                        "kafka_client": client, "state_dir": str(self.state)})


@dataclass(frozen=True)
class HandedOff:
    """`distill retrain` found a follower running: the round was handed to it."""

    run_id: str
    follower: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": "handed_off", "follower": self.follower}


def hand_off(state: Path, run_id: str | None, since_ts: float | None) -> HandedOff | None:
    """If a follower runs on ``state``, queue the round for it and say so; else None.

    Cheap (no torch): `distill retrain` calls it first, so it answers at once.
    """
    paths = TrainerPaths(state)
    info = follower_info(paths)
    if info is None:
        return None
    run_id = run_id or new_run_id("manual")
    request_round(paths, run_id, since_ts)
    return HandedOff(run_id, info)


@dataclass(frozen=True)
class ManualRound:
    """What `distill retrain` asks for besides the round settings."""

    since_ts: float | None = None
    run_id: str | None = None
    from_archive: Path | None = None


def manual_round(cfg: Config, state: Path, settings: RoundSettings, req: ManualRound,
                 control: Any = None,
                 note: Callable[[str], None] = log.info) -> RoundOutcome:
    """`distill retrain`: import the archive, then one round on the trainer's code path.

    Raises :class:`UsageError` (nothing to bootstrap from) and
    :class:`~distill.trainer.exceptions.RoundBusyError`.
    """
    from distill.trainer.buffer import GroupBuffer
    from distill.trainer.progress import RoundControl
    from distill.trainer.registry import Registry
    from distill.trainer.round import run_round

    paths = TrainerPaths(state)
    registry = Registry(paths.registry)
    finished = registry.run(req.run_id) if req.run_id else None
    if not (finished and finished.get("status") in ("promoted", "kept")):
        with GroupBuffer(paths.buffer, cfg.train.buffer_max_groups,
                         cfg.train.probe_fraction, cfg.train.min_group_answers) as buffer:
            archive = req.from_archive or (paths.archive if paths.archive.is_dir() else None)
            added = buffer.import_archive(archive) if archive else 0
            counts = buffer.counts()
        note(f"buffer: {counts.train} training + {counts.probe} probe groups "
             f"({added} imported{f' from {archive}' if archive else ''})")
        if registry.reference() is None and cfg.train.student is None:
            raise UsageError("no reference model registered yet: pass --student DIR")
    control = control or RoundControl()
    with stop_on_signals(control.stop):
        return run_round(paths, settings, run_id=req.run_id, trigger="manual",
                         since_ts=req.since_ts, student=cfg.train.student, control=control)
