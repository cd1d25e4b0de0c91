"""Exceptions of the service: broken state or infrastructure, never bad input."""

from __future__ import annotations


class DistillError(Exception):
    """Base class of every distill error."""


class CheckpointUnreadable(DistillError):
    """A partition checkpoint exists but cannot be restored (corrupt, or written by an
    incompatible version). The monitor stops rather than start fresh and double count."""


class ServeStalled(DistillError):
    """Serve made no progress for ``serve.stall_exit_s``: no partitions assigned, or its
    outputs not acknowledged (so no checkpoint). It exits non-zero for its supervisor to
    restart it; nothing past the last checkpoint was committed, so nothing is lost."""


class ServeSetupError(DistillError):
    """Serve cannot start as configured (state dir, metrics address, ...); the message says
    what and where."""


class OffsetOutOfRange(DistillError):
    """A checkpointed offset lies outside its partition's log (the broker lost data) and
    ``serve.offset_out_of_range`` is ``fail``."""
