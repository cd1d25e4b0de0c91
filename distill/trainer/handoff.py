"""Handing a round from `distill retrain` to a running `distill train --follow`.

While it runs, the follower holds an exclusive ``flock`` on ``trainer/follower.lock``
(the kernel drops it when the process dies, so a crashed follower never blocks anyone)
and writes its pid and topics into that file. `distill retrain` checks the lock before
it imports anything heavy: when a follower holds it, retrain writes
``trainer/retrain-request.json`` (atomically) and exits at once; the follower picks the
request up on its next loop pass and runs the round with the requested run id, on the
same code path.

>>> import tempfile
>>> from distill.trainer.round import TrainerPaths
>>> paths = TrainerPaths(Path(tempfile.mkdtemp()))
>>> follower_info(paths) is None
True
>>> with FollowerLock(paths, {"groups_topic": "g"}):
...     follower_info(paths)["groups_topic"]
'g'
>>> request_round(paths, "r1", None); take_request(paths)["run_id"], take_request(paths)
('r1', None)
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.durable import lock_held, write_json_atomic

if TYPE_CHECKING:
    from distill.trainer.round import TrainerPaths


class FollowerLock:
    """Held for the follower's life; refuses a second follower on the same state dir."""

    def __init__(self, paths: TrainerPaths, info: dict[str, Any]) -> None:
        self.paths, self.info = paths, info
        self._fd: int | None = None

    def __enter__(self) -> FollowerLock:
        self.paths.trainer.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.paths.follower_lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FollowerRunningError(
                f"another follower holds {self.paths.follower_lock}") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), **self.info}).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FollowerRunningError(RuntimeError):
    """A second follower on the same state directory."""


def follower_info(paths: TrainerPaths) -> dict[str, Any] | None:
    """What the live follower wrote into its lock file, or None when none runs."""
    if not lock_held(paths.follower_lock):
        return None
    text = Path(paths.follower_lock).read_text() or "{}"
    try:
        return dict(json.loads(text))
    except ValueError:
        return {}


def request_round(paths: TrainerPaths, run_id: str, since_ts: float | None) -> None:
    """Ask the follower for one round (a newer request replaces an older one)."""
    paths.trainer.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths.retrain_request, {"run_id": run_id, "since_ts": since_ts})


def take_request(paths: TrainerPaths) -> dict[str, Any] | None:
    """The pending request, removed from disk; None when there is none."""
    try:
        doc = json.loads(Path(paths.retrain_request).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        doc = None
    Path(paths.retrain_request).unlink(missing_ok=True)
    return doc if isinstance(doc, dict) and doc.get("run_id") else None
