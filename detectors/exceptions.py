"""Exceptions of the detectors package, named for what happened (bugs and broken state only;
bad parameters raise ``ValueError`` at construction, as in River)."""

from __future__ import annotations


class DetectorError(Exception):
    """Base class of every detectors error."""


class StateVersionUnsupported(DetectorError):
    """A state document has a format or version this code cannot read."""


class StateRiverMismatch(DetectorError):
    """A state document holds River internals written by another River version."""


class StateCorrupt(DetectorError):
    """A state document is missing fields or holds values of the wrong shape."""


class UnknownSignal(DetectorError):
    """An update named a signal the bank has no detector for."""
