"""`distill retrain`: one training round by hand, on the trainer's own code path.

Exit status: 0 when a model was promoted or deliberately kept (the gate rejected the
candidate), 1 when the round failed, 2 for a usage problem (no student, bad flag),
3 when there was nothing to train, 4 when another round holds the state directory.
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from distill.cli.common import config_option, load_or_exit
from distill.cli.train import (
    check_apo,
    do_rollback,
    round_options,
    round_settings,
    state_dir_of,
)

EXIT = {"promoted": 0, "kept": 0, "failed": 1, "skipped": 3}
EXIT_BUSY = 4
STAGES = ("import", "bootstrap", "train", "evaluate", "gate", "done")


def parse_since(text: str | None) -> float | None:
    """``--since`` as epoch seconds: RFC 3339 / ISO 8601, naive = UTC.

    >>> parse_since("2026-01-01T00:00:00Z")
    1767225600.0
    """
    if text is None:
        return None
    from distill.trainer.buffer import parse_time

    try:
        return parse_time(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time",
                                 param_hint="--since") from None


@click.command(name="retrain")
@config_option
@round_options
@click.option("--since", default=None, metavar="ISO-TIME",
              help="Train on groups completed since then (instead of those new since the "
                   "last round).")
@click.option("--run-id", default=None,
              help="Idempotency key: re-running a finished run id reports its result and "
                   "trains nothing. [default: a fresh id]")
@click.option("--from-archive", type=click.Path(file_okay=False, exists=True,
                                                path_type=Path), default=None,
              help="Import groups from a serve archive dir first. [default: STATE_DIR/archive "
                   "when it exists]")
@click.option("--rollback", default=None, metavar="VERSION|parent",
              help="Make VERSION (or the current version's parent) current again and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def command(config_path: Path | None, state_dir: Path | None, student: Path | None,
            steps: int | None, max_new_groups: int | None, replay_fraction: float | None,
            tolerance: float | None, keep_rejected: bool, keep_versions: int,
            apo_fields: tuple[str, ...], since: str | None, run_id: str | None,
            from_archive: Path | None, rollback: str | None, as_json: bool,
            no_progress: bool) -> None:
    """Run one training round by hand over the stored groups.

    Same round as `distill train --follow`: bootstrap the reference if none is registered,
    APO on the new groups (plus replayed older ones), the evaluation gate on the held-out
    probe, then promote or keep. Idempotent by --run-id.

    Exit status: 0 promoted or deliberately kept, 1 the round failed, 2 usage (no student
    to bootstrap from, a bad flag), 3 nothing new to train on, 4 another round is running.
    """
    cfg = load_or_exit(config_path, {"train": {"student": student}})
    state = state_dir_of(cfg, state_dir)
    if rollback is not None:
        do_rollback(state, rollback)
        return
    since_ts = parse_since(since)
    settings = round_settings(cfg, steps, max_new_groups, replay_fraction, tolerance,
                              keep_rejected, apo_fields, keep_versions)
    sys.exit(_retrain(cfg, state, settings, since_ts, run_id, from_archive, as_json,
                      not no_progress))


def _retrain(cfg: Any, state: Path, settings: Any, since_ts: float | None,
             run_id: str | None, from_archive: Path | None, as_json: bool,
             progress: bool) -> int:
    from distill.trainer.buffer import GroupBuffer
    from distill.trainer.exceptions import RoundBusyError
    from distill.trainer.registry import Registry
    from distill.trainer.round import TrainerPaths, run_round

    paths = TrainerPaths(state)
    registry = Registry(paths.registry)
    finished = registry.run(run_id) if run_id else None
    if not (finished and finished.get("status") in ("promoted", "kept")):
        check_apo(settings)
        with GroupBuffer(paths.buffer, cfg.train.buffer_max_groups,
                         cfg.train.probe_fraction, cfg.train.min_group_answers) as buffer:
            archive = from_archive or (paths.archive if paths.archive.is_dir() else None)
            added = buffer.import_archive(archive) if archive else 0
            counts = buffer.counts()
        click.echo(f"buffer: {counts.train} training + {counts.probe} probe groups "
                   f"({added} imported{f' from {archive}' if archive else ''})", err=True)
        if registry.reference() is None and cfg.train.student is None:
            click.echo("distill retrain: no reference model registered yet: pass --student "
                       "DIR", err=True)
            return 2
    student = cfg.train.student
    try:
        # Trainer logs go to stderr, so stdout holds only the outcome (--json).
        with contextlib.redirect_stdout(sys.stderr), _Stages(progress) as stages:
            outcome = run_round(paths, settings, run_id=run_id, trigger="manual",
                                since_ts=since_ts, student=student, stage=stages.update,
                                progress=False)
    except RoundBusyError as exc:
        click.echo(f"distill retrain: {exc}", err=True)
        return EXIT_BUSY
    _report(outcome, as_json)
    return EXIT[outcome.status]


def _report(outcome: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(outcome.to_dict(), indent=1, sort_keys=True))
        return
    m = outcome.metrics
    head = "already finished: " if outcome.reused else ""
    click.echo(f"run {outcome.run_id}: {head}{outcome.status} "
               f"(version {outcome.version or '-'}, current {outcome.current or '-'}) "
               f"in {outcome.seconds:.1f} s. {outcome.reason}")
    if m:
        keys = [k for k in ("loss", "reward_margin", "eval_score", "current_eval_score",
                            "synthesis_fallbacks", "tokens_per_s") if k in m]
        click.echo("  " + ", ".join(f"{k}={m[k]:.4g}" for k in keys))


class _Stages:
    """A rich progress bar over the round's stages (bootstrap, train, evaluate, gate)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self._started = datetime.now()

    def __enter__(self) -> _Stages:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                                      BarColumn(), TextColumn("{task.fields[detail]}"),
                                      TimeElapsedColumn(), console=Console(stderr=True))
            self._progress.start()
            self._task = self._progress.add_task("retrain", total=len(STAGES) - 1,
                                                 detail="starting")
        return self

    def update(self, name: str, detail: str) -> None:
        if not self.enabled:
            click.echo(f"{name}: {detail}", err=True)
            return
        done = STAGES.index(name) if name in STAGES else 0
        self._progress.update(self._task, completed=done, description=name, detail=detail)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
