"""The state directory: one type owns its layout, for the monitor and the trainer alike.

::

    STATE_DIR/
      checkpoints/<topic>-<partition>.json   per-partition state + next offset (serve, replay)
      archive/<topic>-<partition>-<seq>.jsonl[.gz]   closed groups (serve, replay)
      alerts.jsonl, timeline.jsonl           diagnostics for `distill report` (serve, replay)
      changepoints.json, replay.json         true change points; a replay's summary
      tansu.log                              the embedded broker's log
      demo/                                  `distill serve --demo`'s own state dir
      trainer/buffer.sqlite                  the trainer's group buffer
      trainer/registry/registry.json         student versions (models/ beside it)
      trainer/round.lock                     one round at a time
      trainer/follower.lock                  held by `distill train --follow` (pid, topics)
      trainer/retrain-request.json           a round `distill retrain` handed to the follower

Every reader and writer asks :class:`StateDir` for a path; the checkpoint file names
themselves belong to :mod:`stream.checkpoint`, which :meth:`StateDir.checkpoint` calls.
``alerts.jsonl`` and ``timeline.jsonl`` lines have one encoder, :func:`jsonl_line`.

>>> s = StateDir(Path("state"))
>>> str(s.checkpoint("in", 3)), str(s.registry_file)
('state/checkpoints/in-3.json', 'state/trainer/registry/registry.json')
>>> jsonl_line({"b": 1, "a": (0.5, 2)})
b'{"a":[0.5,2],"b":1}\\n'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stream.checkpoint import CHECKPOINTS_DIR, checkpoint_path

REGISTRY_FILE = "registry.json"
_JSONL_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


@dataclass(frozen=True)
class StateDir:
    """The layout of one state directory (nothing is created until a writer needs it)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- the monitor ---------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    def checkpoint(self, topic: str, partition: int) -> Path:
        return checkpoint_path(self.root, topic, partition)

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def alerts(self) -> Path:
        return self.root / "alerts.jsonl"

    @property
    def timeline(self) -> Path:
        return self.root / "timeline.jsonl"

    @property
    def changepoints(self) -> Path:
        return self.root / "changepoints.json"

    @property
    def replay_summary(self) -> Path:
        return self.root / "replay.json"

    @property
    def broker_log(self) -> Path:
        return self.root / "tansu.log"

    @property
    def demo(self) -> Path:
        """A state dir of its own, wiped and refilled by each `distill serve --demo`."""
        return self.root / "demo"

    @property
    def models(self) -> Path:
        """Models built from installed packages, kept across runs (the demo's too)."""
        return self.root / "models"

    def replay_outputs(self) -> tuple[Path, ...]:
        """What a replay writes, and all that `distill replay --force` may remove."""
        return (self.checkpoints, self.archive, self.alerts, self.timeline, self.changepoints,
                self.replay_summary)

    # -- the trainer ---------------------------------------------------------------------
    @property
    def trainer(self) -> Path:
        return self.root / "trainer"

    @property
    def buffer(self) -> Path:
        return self.trainer / "buffer.sqlite"

    @property
    def registry(self) -> Path:
        return self.trainer / "registry"

    @property
    def registry_file(self) -> Path:
        return self.registry / REGISTRY_FILE

    @property
    def round_lock(self) -> Path:
        return self.trainer / "round.lock"

    @property
    def follower_lock(self) -> Path:
        """Held by `distill train --follow` while it runs; holds its pid and topics."""
        return self.trainer / "follower.lock"

    @property
    def retrain_request(self) -> Path:
        """A round asked for by `distill retrain` while a follower runs."""
        return self.trainer / "retrain-request.json"


def jsonl_line(doc: Any) -> bytes:
    """One line of ``alerts.jsonl`` / ``timeline.jsonl``: sorted keys, numpy values as
    numbers, newline-terminated, so serve and replay write the same bytes for the same doc."""
    return orjson.dumps(doc, option=_JSONL_OPTIONS, default=_plain)


def _plain(value: Any) -> Any:
    """Fallback for values orjson does not know (numpy scalars, anything else as text)."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
