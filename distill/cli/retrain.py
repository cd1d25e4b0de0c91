"""`distill retrain`: one training round by hand, on the trainer's own code path.

Exit status: 0 when a model was promoted or deliberately kept (the gate rejected the
candidate), 1 when the round failed, 2 for a usage problem (no student, bad flag),
3 when there was nothing to train, 4 when another round holds the state directory,
5 when a signal stopped the round (recorded as interrupted), 6 when a follower
(`distill train --follow`) runs on the state directory: the round was handed to it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from distill.cli.common import (
    config_option,
    load_or_exit,
    rollback_or_exit,
    round_options,
    settings_or_exit,
)

EXIT = {"promoted": 0, "kept": 0, "failed": 1, "skipped": 3, "interrupted": 5}
EXIT_BUSY = 4
EXIT_HANDED_OFF = 6


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
@click.option("--no-progress", is_flag=True, help="No progress bar (log lines instead).")
def command(config_path: Path | None, state_dir: Path | None, student: Path | None,
            steps: int | None, max_new_groups: int | None, replay_fraction: float | None,
            tolerance: float | None, keep_rejected: bool, keep_versions: int,
            apo_fields: tuple[str, ...], log_format: str | None, since: str | None,
            run_id: str | None, from_archive: Path | None, rollback: str | None,
            as_json: bool, no_progress: bool) -> None:
    """Run one training round by hand over the stored groups.

    Same round as `distill train --follow`: bootstrap the reference if none is registered,
    APO on the new groups (plus replayed older ones), the evaluation gate on the held-out
    probe, then promote or keep. Idempotent by --run-id. When a follower runs on the same
    state dir, the round is handed to it at once (exit 6). SIGTERM/SIGINT stop the round at
    the next step boundary (exit 5).

    Exit status: 0 promoted or deliberately kept, 1 the round failed, 2 usage (no student
    to bootstrap from, a bad flag), 3 nothing new to train on, 4 another round is running,
    5 interrupted, 6 handed to the running follower.
    """
    cfg = load_or_exit(config_path, {"train": {"student": student},
                                     "serve": {"state_dir": state_dir,
                                               "log_format": log_format}})
    from distill.logs import setup_logging

    setup_logging(cfg.serve.log_format)
    state = Path(cfg.serve.state_dir)
    if rollback is not None:
        rollback_or_exit(state, rollback)
        return
    since_ts = parse_since(since)
    from distill.trainer.service import hand_off

    handed = hand_off(state, run_id, since_ts)  # before torch is imported: answers at once
    if handed is not None:
        f = handed.follower
        click.echo(f"distill retrain: a follower (pid {f.get('pid')}, consuming "
                   f"{f.get('groups_topic')}) runs on {state}; round {handed.run_id} was "
                   "handed to it. Follow it with `distill status`.", err=True)
        if as_json:
            click.echo(json.dumps(handed.to_dict(), indent=1, sort_keys=True))
        sys.exit(EXIT_HANDED_OFF)
    settings = settings_or_exit(cfg, steps, max_new_groups, replay_fraction, tolerance,
                                keep_rejected, keep_versions, apo_fields)
    sys.exit(_retrain(cfg, state, settings, since_ts, run_id, from_archive, as_json,
                      progress=not no_progress))


def _retrain(cfg: Any, state: Path, settings: Any, since_ts: float | None,
             run_id: str | None, from_archive: Path | None, as_json: bool,
             progress: bool) -> int:
    from distill.trainer.exceptions import RoundBusyError, TrainerError
    from distill.trainer.progress import RoundControl, make_view
    from distill.trainer.service import ManualRound, UsageError, manual_round

    view = make_view(cfg.serve.log_format, bar=None if progress else False)
    request = ManualRound(since_ts=since_ts, run_id=run_id, from_archive=from_archive)
    try:
        # Library output goes to stderr, so stdout holds only the outcome (--json).
        with contextlib.redirect_stdout(sys.stderr):
            outcome = manual_round(cfg, state, settings, request, RoundControl(view),
                                   note=lambda text: click.echo(text, err=True))
    except RoundBusyError as exc:
        click.echo(f"distill retrain: {exc}", err=True)
        return EXIT_BUSY
    except UsageError as exc:
        click.echo(f"distill retrain: {exc}", err=True)
        return 2
    except TrainerError as exc:
        click.echo(f"distill retrain: {exc}", err=True)
        return 1
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
