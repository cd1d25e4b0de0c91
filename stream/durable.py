"""Durable files: atomic replace (temp file, fsync, rename, fsync dir) and JSON on top of it.

Used by the monitor's checkpoints, the archive and the trainer's registry: whatever a crash
interrupts, a path holds either its old or its new content.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` survive a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either the old or the new content, never a mix:
    a temp file in the same directory, fsync, rename, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, doc: Any) -> None:
    """Atomic JSON: floats round-trip exactly, so restored state continues bit for bit."""
    write_bytes_atomic(path, orjson.dumps(doc, option=_ORJSON_OPTIONS))


def read_json(path: Path) -> Any | None:
    try:
        return orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return None


def lock_held(path: Path) -> bool:
    """Whether a live process holds an exclusive ``flock`` on ``path`` (False when the file
    does not exist). The kernel drops a dead process's lock, so this tells a running owner
    from a crashed one; the shared probe never disturbs another prober."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
