"""One training round, the single code path of ``distill train --follow`` and ``distill retrain``.

Numbered steps, each recorded in the registry under the run id:

1. take the round lock of the state directory (one round at a time across processes);
   runs still marked ``running`` belong to a process that died: they become ``abandoned``;
2. a run id that already finished (promoted or kept) is answered from the registry and
   nothing runs again: rounds are idempotent by run id, also when the process died after
   the registry commit but before the run was recorded (the version names its run id);
3. bootstrap the frozen reference (SFT on all teachers) if none is registered;
4. select the new training groups since the last finished round (or since ``--since``)
   plus a seeded replay sample of older ones; probe groups are never selected;
5. APO steps (``distill.apo.train_round``) into a staging directory;
6. evaluate the candidate and the current version on the same held-out probe set;
7. promote the candidate if it is not worse (``score >= current - tolerance``), else keep
   the current version; the registry commit is atomic (see :mod:`distill.trainer.registry`);
8. record the run (status, version, watermark, metrics) and update the Prometheus metrics.

A failure at any step is recorded as a ``failed`` run and returned as a value; a stop
asked for through :class:`~distill.trainer.progress.RoundControl` (SIGTERM) ends the round
at the next step boundary as ``interrupted``. Either way the staging directory is removed,
so the registry never points at a partial model.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from distill.config import DEFAULTS
from distill.groups import TeacherGroup
from distill.statedir import StateDir
from distill.trainer.buffer import GroupBuffer
from distill.trainer.exceptions import (
    NoStudentError,
    NothingToTrainError,
    RoundBusyError,
    RoundInterruptedError,
)
from distill.trainer.progress import RoundControl, hf_callback
from distill.trainer.registry import Registry, Version
from distill.trainer.triggers import TRIGGERS

log = logging.getLogger(__name__)

RoundStatus = Literal["promoted", "kept", "skipped", "failed", "interrupted"]


TrainerPaths = StateDir
"""The trainer's view of the state directory is the one layout (:mod:`distill.statedir`)."""


@dataclass(frozen=True)
class RoundSettings:
    """What one round does. ``apo`` passes extra :class:`distill.apo.APOConfig` fields."""

    steps: int = DEFAULTS.train.steps
    max_new_groups: int = DEFAULTS.train.max_new_groups
    replay_fraction: float = DEFAULTS.train.replay_fraction
    probe_max: int = 64
    tolerance: float = DEFAULTS.train.gate_tolerance
    gate_metrics: tuple[str, ...] = ("agreement", "accuracy")
    keep_rejected: bool = False
    keep_versions: int = 5  # newest versions whose weights are kept (+ current, reference)
    bootstrap_max_groups: int = DEFAULTS.train.bootstrap_max_groups
    seed: int = 0
    apo: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.max_new_groups <= 0 or self.probe_max <= 0:
            raise ValueError("steps, max_new_groups and probe_max must be positive")
        if not 0.0 <= self.replay_fraction <= 4.0:
            raise ValueError("replay_fraction must be in [0, 4]")
        if self.tolerance < 0:
            raise ValueError("tolerance must be >= 0")
        if self.keep_versions < 1:
            raise ValueError("keep_versions must be >= 1")


@dataclass(frozen=True)
class TrainOutput:
    model_dir: Path
    metrics: dict[str, float]


class Engine(Protocol):
    """The training backend: :class:`ApoEngine` in production, a stand-in in logic tests."""

    def bootstrap(self, student_dir: Path, groups: Sequence[TeacherGroup], out_dir: Path,
                  settings: RoundSettings, control: RoundControl) -> Path: ...

    def train(self, policy_dir: Path, reference_dir: Path, groups: Sequence[TeacherGroup],
              out_dir: Path, settings: RoundSettings, control: RoundControl) -> TrainOutput: ...

    def evaluate(self, model_dir: Path, probe: Sequence[TeacherGroup],
                 settings: RoundSettings) -> dict[str, float]: ...


class ApoEngine:
    """``distill.apo`` (imported on first use, so the CLI starts without torch)."""

    def _config(self, out_dir: Path, settings: RoundSettings) -> Any:
        from distill.apo import APOConfig
        from distill.logs import adopt_library_loggers

        adopt_library_loggers()  # transformers is imported now

        fields = {"disable_tqdm": True, "seed": settings.seed, **dict(settings.apo)}
        return APOConfig(output_dir=str(out_dir / ".hf-trainer"), max_steps=settings.steps,
                         **fields)

    def check(self, settings: RoundSettings) -> str | None:
        """Why these APO fields cannot work (a bad name or combination), or None; call it
        before a round so a typo fails at start, not as a failed run."""
        import tempfile

        try:
            with tempfile.TemporaryDirectory() as tmp:
                self._config(Path(tmp), settings)
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None

    def bootstrap(self, student_dir: Path, groups: Sequence[TeacherGroup], out_dir: Path,
                  settings: RoundSettings, control: RoundControl) -> Path:
        from distill.apo import bootstrap

        path = Path(bootstrap(student_dir, list(groups), out_dir, self._config(out_dir, settings),
                              callbacks=[hf_callback(control)]))
        shutil.rmtree(out_dir / ".hf-trainer", ignore_errors=True)
        control.check()  # a stop mid-SFT leaves a model that must not be registered
        return path

    def train(self, policy_dir: Path, reference_dir: Path, groups: Sequence[TeacherGroup],
              out_dir: Path, settings: RoundSettings, control: RoundControl) -> TrainOutput:
        from distill.apo.training import TrainingStopped, train_round

        try:
            result = train_round(policy_dir, reference_dir, list(groups), out_dir,
                                 self._config(out_dir, settings), progress=False,
                                 callbacks=[hf_callback(control)], on_batch=control.batch)
        except TrainingStopped as exc:
            raise RoundInterruptedError(f"stopped by a signal: {exc}") from exc
        finally:
            shutil.rmtree(out_dir / ".hf-trainer", ignore_errors=True)
        control.check()
        return TrainOutput(Path(result.model_dir), {k: float(v) for k, v in
                                                     result.metrics.items()})

    def evaluate(self, model_dir: Path, probe: Sequence[TeacherGroup],
                 settings: RoundSettings) -> dict[str, float]:
        """The gate's scores; a vision student reads the probe's images under the round's
        ``image_roots`` (the same roots its training groups were read under)."""
        from distill.apo import evaluate

        roots = settings.apo.get("image_roots")
        return {k: float(v) for k, v in evaluate(model_dir, list(probe),
                                                 image_roots=roots).items()}


@dataclass(frozen=True)
class RoundOutcome:
    run_id: str
    status: RoundStatus
    trigger: str
    version: str | None = None  # the version this round created (promoted or rejected)
    current: str | None = None  # the serving version after the round
    reason: str = ""
    seconds: float = 0.0
    groups: int = 0
    replayed: int = 0
    upto_seq: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    reused: bool = False  # answered from the registry: this run id had already finished

    @property
    def ok(self) -> bool:
        """Exit-0 outcomes: a model was promoted or deliberately kept."""
        return self.status in ("promoted", "kept")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def round_lock(paths: TrainerPaths) -> Iterator[None]:
    paths.trainer.mkdir(parents=True, exist_ok=True)
    with open(paths.round_lock, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RoundBusyError(f"another round holds {paths.round_lock}") from None
        yield


def new_run_id(trigger: str) -> str:
    return f"{trigger}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def gate(current: Mapping[str, float], candidate: Mapping[str, float],
         metrics: Sequence[str], tolerance: float) -> tuple[bool, str]:
    """Promote when the candidate is not worse on every gate metric both sides measured.

    ``agreement`` (with the teachers' consensus) always exists; ``accuracy`` only where the
    probe carries ground truth (experiments).

    >>> gate({"agreement": 0.5}, {"agreement": 0.5}, ("agreement", "accuracy"), 0.0)
    (True, 'agreement 0.5000 >= 0.5000')
    >>> gate({"agreement": 0.5, "accuracy": 0.6}, {"agreement": 0.7, "accuracy": 0.5},
    ...      ("agreement", "accuracy"), 0.05)
    (False, 'agreement 0.7000 >= 0.5000 - 0.05; accuracy 0.5000 < 0.6000 - 0.05')
    >>> gate({}, {}, ("agreement",), 0.0)
    (True, 'no probe groups: gate not evaluated')
    """
    parts, ok = [], True
    for name in metrics:
        if name not in candidate or name not in current:
            continue
        new, old = candidate[name], current[name]
        passed = new >= old - tolerance
        ok = ok and passed
        slack = f" - {tolerance:g}" if tolerance else ""
        parts.append(f"{name} {new:.4f} {'>=' if passed else '<'} {old:.4f}{slack}")
    if not parts:
        return True, "no probe groups: gate not evaluated"
    return ok, "; ".join(parts)


def run_round(paths: TrainerPaths, settings: RoundSettings, *, run_id: str | None = None,
              trigger: str = "manual", since_ts: float | None = None,
              student: Path | None = None, engine: Engine | None = None,
              metrics: Any = None, control: RoundControl | None = None) -> RoundOutcome:
    """Run one round (see the module docstring); raises only :class:`RoundBusyError`.

    ``control`` reports the round's stages and steps and carries its stop flag; the
    default logs them.
    """
    run_id = run_id or new_run_id(trigger)
    control = control or RoundControl()
    control.run_id = run_id
    with round_lock(paths):
        registry = Registry(paths.registry)
        for dead in registry.abandon_running():
            log.warning("run %s was left running by a process that died: marked abandoned",
                        dead)
        done = registry.run(run_id)
        if not (done and done.get("status") in ("promoted", "kept")):
            done = registry.recover_run(run_id) or done
        if done and done.get("status") in ("promoted", "kept"):
            control.stage("done", f"run {run_id} already finished: {done['status']}")
            return _from_record(run_id, done)
        started = time.monotonic()
        registry.start_run(run_id, {"trigger": trigger, "since_ts": since_ts,
                                    "steps": settings.steps})
        try:
            control.check()
            outcome = _round(paths, registry, settings, run_id, trigger, since_ts, student,
                             engine or ApoEngine(), control, started)
        except NothingToTrainError as exc:
            outcome = RoundOutcome(run_id, "skipped", trigger, reason=str(exc),
                                   current=_name(registry.current()),
                                   seconds=time.monotonic() - started)
        except RoundInterruptedError as exc:
            log.warning("round %s interrupted: %s", run_id, exc)
            outcome = RoundOutcome(run_id, "interrupted", trigger, reason=str(exc),
                                   current=_name(registry.current()),
                                   seconds=time.monotonic() - started)
        except Exception as exc:
            log.exception("round %s failed", run_id)
            outcome = RoundOutcome(run_id, "failed", trigger, reason=f"{type(exc).__name__}: "
                                   f"{exc}", current=_name(registry.current()),
                                   seconds=time.monotonic() - started)
        record = outcome.to_dict()
        record.pop("reused")
        registry.finish_run(run_id, record)
    observe(metrics, outcome, paths)
    control.stage("done", f"{outcome.status}: {outcome.reason}")
    return outcome


def _round(paths: TrainerPaths, registry: Registry, settings: RoundSettings, run_id: str,
           trigger: str, since_ts: float | None, student: Path | None, engine: Engine,
           control: RoundControl, started: float) -> RoundOutcome:
    with GroupBuffer(paths.buffer) as buffer:
        if registry.reference() is None:
            _bootstrap(registry, buffer, settings, student, engine, control, run_id)
        selection = buffer.select(registry.watermark(), settings.max_new_groups,
                                  settings.replay_fraction, seed=_seed(settings, run_id),
                                  since_ts=since_ts)
        probe = buffer.probe(settings.probe_max)
    if not selection.new:
        raise NothingToTrainError("no new training groups in the buffer")
    registry.note_run(run_id, upto_seq=selection.upto_seq, groups=len(selection.new),
                      replayed=len(selection.replay))
    current, reference = registry.current(), registry.reference()
    assert current is not None and reference is not None
    control.stage("train", f"{len(selection.new)} new + {len(selection.replay)} replayed "
                           f"groups, {settings.steps} steps from {current.version}")
    with registry.staging() as staging:
        out = engine.train(registry.model_dir(current), registry.model_dir(reference),
                           selection.groups, staging, settings, control)
        control.check()
        model_dir, subdir = _inside(out.model_dir, staging)
        control.stage("evaluate", f"{len(probe)} probe groups")
        cand = engine.evaluate(model_dir, probe, settings) if probe else {}
        control.check()
        base = engine.evaluate(registry.model_dir(current), probe, settings) if probe else {}
        control.check()
        promote, why = gate(base, cand, settings.gate_metrics, settings.tolerance)
        metrics = {**out.metrics, **{f"eval_{k}": v for k, v in cand.items()},
                   **{f"current_eval_{k}": v for k, v in base.items()}}
        version = registry.commit(
            staging, status="promoted" if promote else "rejected", metrics=metrics,
            parent=current.version, run_id=run_id, trigger=trigger,
            model_subdir=subdir, keep_weights=settings.keep_rejected)
    registry.prune(settings.keep_versions)
    control.stage("gate", ("promoted " if promote else "kept ") + why)
    return RoundOutcome(run_id, "promoted" if promote else "kept", trigger,
                        version=version.version, current=_name(registry.current()), reason=why,
                        seconds=time.monotonic() - started, groups=len(selection.new),
                        replayed=len(selection.replay), upto_seq=selection.upto_seq,
                        metrics=metrics)


def _bootstrap(registry: Registry, buffer: GroupBuffer, settings: RoundSettings,
               student: Path | None, engine: Engine, control: RoundControl,
               run_id: str) -> Version:
    if student is None:
        raise NoStudentError("no reference model registered: pass --student DIR to bootstrap")
    groups = [g for _, g in buffer.new_since(0, limit=settings.bootstrap_max_groups)]
    if not groups:
        raise NothingToTrainError("no training groups to bootstrap the reference from")
    control.stage("bootstrap", f"SFT on {len(groups)} groups from {student}")
    with registry.staging() as staging:
        made = engine.bootstrap(Path(student), groups, staging, settings, control)
        control.check()
        _, subdir = _inside(made, staging)
        return registry.commit(
            staging, status="reference", metrics={"groups": float(len(groups))}, parent=None,
            run_id=run_id, trigger="bootstrap", model_subdir=subdir)


def _inside(model_dir: Path, staging: Path) -> tuple[Path, str]:
    """The model directory inside ``staging`` (copied there if the engine wrote elsewhere)
    and its path relative to ``staging`` ("" when it is ``staging`` itself)."""
    resolved, root = Path(model_dir).resolve(), staging.resolve()
    if resolved == root:
        return staging, ""
    if root in resolved.parents:
        sub = str(resolved.relative_to(root))
        return staging / sub, sub
    shutil.copytree(resolved, staging / "model")
    return staging / "model", "model"


def _seed(settings: RoundSettings, run_id: str) -> int:
    return settings.seed * 1_000_003 + zlib.crc32(run_id.encode())


def _name(version: Version | None) -> str | None:
    return version.version if version else None


def _from_record(run_id: str, record: Mapping[str, Any]) -> RoundOutcome:
    fields = {k: record[k] for k in RoundOutcome.__dataclass_fields__ if k in record}
    fields.update(run_id=run_id, reused=True)
    fields.setdefault("trigger", "manual")
    return RoundOutcome(**fields)


def observe(metrics: Any, outcome: RoundOutcome, paths: TrainerPaths | None = None) -> None:
    """Update :class:`distill.metrics.TrainerMetrics` (``None`` = no metrics) for a round."""
    if metrics is None or outcome.reused or outcome.status == "skipped":
        return
    trigger = outcome.trigger if outcome.trigger in TRIGGERS else "manual"
    metrics.retrain_runs.labels(trigger=trigger, status=outcome.status).inc()
    metrics.retrain_duration.observe(outcome.seconds)
    if outcome.status in ("failed", "interrupted"):
        return
    metrics.retrain_last_success.set(time.time())
    m = outcome.metrics
    if "loss" in m:
        metrics.train_loss.set(m["loss"])
    if "reward_margin" in m:
        metrics.reward_margin.set(m["reward_margin"])
    metrics.preference_groups.inc(m.get("groups", outcome.groups + outcome.replayed))
    metrics.synthesis_fallbacks.inc(m.get("synthesis_fallbacks", 0.0))
    prefix = "eval_" if outcome.status == "promoted" else "current_eval_"
    for key, value in m.items():
        if key.startswith(prefix) and not key.startswith(prefix + "n_probe"):
            metrics.eval_score.labels(metric=key[len(prefix):]).set(value)
    if outcome.current:
        metrics.student_version.set(int(outcome.current[1:]))

