"""Exceptions of the service: broken state or infrastructure, never bad input."""

from __future__ import annotations


class DistillError(Exception):
    """Base class of every distill error."""


class CheckpointUnreadable(DistillError):
    """A partition checkpoint exists but cannot be restored (corrupt, or written by an
    incompatible version). The monitor stops rather than start fresh and double count."""
