"""What a running round tells its operator, and how it is asked to stop.

:class:`RoundControl` travels with one round: the stages it passes (``stage``), its
optimizer steps (``step``: done, total, loss, ETA) and a stop flag that a signal handler
sets. The training backend checks the flag at every step boundary (a Hugging Face
``TrainerCallback``, :func:`hf_callback`), so SIGTERM ends a round within one step and the
registry never sees a partial model.

Two views of the same events: :class:`BarView`, a rich progress bar for a terminal, and
:class:`LogView`, log lines through the project's logging (one JSON object per line with
``--log-format json``, with ``step``, ``total``, ``loss`` and ``eta_s`` as fields).

>>> seen = []
>>> control = RoundControl(view=lambda kind, **kw: seen.append((kind, kw.get("step"))))
>>> control.stage("train", "8 groups"); control.step(1, 4, 0.69)
>>> seen
[('stage', None), ('step', 1)]
>>> control.stop(); control.stopped
True
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from distill.trainer.exceptions import RoundInterruptedError

log = logging.getLogger(__name__)

BATCH_STAGES = ("synthesis", "reference")
"""Stages of a training round before its optimizer steps (reported per batch)."""

View = Callable[..., None]
"""``view(kind, **fields)`` with kind ``stage`` (name, detail) or ``step`` (step, total,
loss, eta_s, stage)."""


class RoundControl:
    """Progress out, stop in. Thread-safe: the stop flag is a :class:`threading.Event`."""

    def __init__(self, view: View | None = None, stop_event: threading.Event | None = None,
                 run_id: str = "") -> None:
        self.view = view or LogView()
        self.run_id = run_id
        self._stop = stop_event or threading.Event()
        self._stage = ""
        self._first: tuple[int, float] | None = None  # (step, time) of the stage's first step

    # -- stopping ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the round to end at the next step boundary (safe from a signal handler)."""
        self._stop.set()

    @property
    def stage_name(self) -> str:
        return self._stage

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def check(self) -> None:
        """Raise :class:`RoundInterruptedError` if a stop was asked for."""
        if self._stop.is_set():
            raise RoundInterruptedError(f"stopped by a signal during {self._stage or 'start'}")

    # -- progress ----------------------------------------------------------------------

    def stage(self, name: str, detail: str = "") -> None:
        """A new stage (bootstrap, train, evaluate, gate, done); restarts the step clock."""
        self._stage = name
        self._first = None
        self.view("stage", name=name, detail=detail, run_id=self.run_id)

    def enter(self, name: str, detail: str = "") -> None:
        """Start stage ``name`` unless it is the current one."""
        if name != self._stage:
            self.stage(name, detail)

    def batch(self, name: str, done: int, total: int) -> None:
        """Progress of a batched stage without optimizer steps (synthesis); stops there
        too when asked."""
        self.enter(name, f"{total} items")
        self.step(done, total)
        self.check()

    def step(self, done: int, total: int, loss: float | None = None) -> None:
        """``done`` of ``total`` optimizer steps of the current stage. The ETA is timed from
        the stage's first reported step, so loading and encoding do not skew it."""
        now = time.monotonic()
        if self._first is None:
            self._first = (done, now)
        first, t0 = self._first
        eta = (now - t0) / (done - first) * (total - done) if done > first else None
        self.view("step", step=done, total=total, loss=loss, eta_s=eta, stage=self._stage,
                  run_id=self.run_id)


class LogView:
    """Progress as log lines, at most one step line per ``every_s`` (plus the last step)."""

    def __init__(self, every_s: float = 2.0, logger: logging.Logger = log) -> None:
        self.every_s = every_s
        self.logger = logger
        self._last = 0.0

    def __call__(self, kind: str, **f: Any) -> None:
        if kind == "stage":
            self.logger.info("round %s: %s %s", f["run_id"], f["name"], f["detail"],
                             extra={"run_id": f["run_id"], "stage": f["name"]})
            return
        now = time.monotonic()
        if f["step"] < f["total"] and now - self._last < self.every_s:
            return
        self._last = now
        loss = "-" if f["loss"] is None else f"{f['loss']:.4f}"
        eta = "-" if f["eta_s"] is None else f"{f['eta_s']:.0f} s"
        self.logger.info("round %s: %s step %d/%d, loss %s, eta %s", f["run_id"], f["stage"],
                         f["step"], f["total"], loss, eta,
                         extra={k: f[k] for k in ("run_id", "stage", "step", "total", "loss",
                                                  "eta_s")})


class BarView:
    """A rich progress bar on stderr: the stage, steps done / total, loss, ETA."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
                                  TimeRemainingColumn(), console=Console(stderr=True),
                                  transient=False)
        self._task: Any = None

    def __call__(self, kind: str, **f: Any) -> None:
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("round", total=None, detail="")
        if kind == "stage":
            self._progress.update(self._task, description=f["name"], detail=f["detail"],
                                  total=None, completed=0)
            if f["name"] == "done":
                self.close()
            return
        loss = "" if f["loss"] is None else f"loss {f['loss']:.4f}"
        self._progress.update(self._task, total=f["total"], completed=f["step"], detail=loss)

    def close(self) -> None:
        if self._task is not None:
            self._progress.stop()
            self._task = None


def make_view(log_format: str = "text", bar: bool | None = None) -> View:
    """A bar when stderr is a terminal and logs are text, else log lines."""
    if bar is None:
        bar = log_format == "text" and sys.stderr.isatty()
    return BarView() if bar else LogView()


def hf_callback(round_control: RoundControl) -> Any:
    """A ``transformers.TrainerCallback`` that reports each step and stops on request."""
    from transformers import TrainerCallback

    rc = round_control

    class _Callback(TrainerCallback):
        """A step is reported from ``on_log`` (with its loss, which the Trainer logs after
        ``on_step_end``) or, on steps that do not log, from ``on_step_end``."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if rc.stage_name in BATCH_STAGES:  # APO after synthesis / reference
                rc.enter("train")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if rc.stopped:
                control.should_training_stop = True
            if not control.should_log:
                rc.step(state.global_step, state.max_steps)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                rc.step(state.global_step, state.max_steps, float(logs["loss"]))

    return _Callback()
