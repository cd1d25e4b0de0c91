"""Detector kinds by name and their JSON state (never pickle).

Each detector class writes its own parameters and state with ``to_state()`` and reads them
back with ``from_state()``; this module maps the kind names the bank stores to classes.
KL-window, MMD and HDDM_A state is plain numbers. ADWIN state is River's serialised Rust core,
valid only for the River version pinned in ``pyproject.toml`` (``river==0.26.1``);
:func:`detector_from_state` raises :class:`~detectors.exceptions.StateRiverMismatch`
otherwise instead of guessing.

>>> d = detector_from_state("kl_window", KLWindow(bins=4).update("a").to_state())
>>> type(d).__name__, d.n
('KLWindow', 1)
"""

from __future__ import annotations

from typing import Any, Protocol

from detectors.adwin import ADWIN
from detectors.exceptions import StateCorrupt, StateVersionUnsupported
from detectors.hddm_a import HDDMA
from detectors.kl_window import KLWindow
from detectors.mmd import MMDWindow

STATE_FORMAT = "drift-distill/detector-bank"
STATE_VERSION = 2  # 2: joint MMD tests, answer counts


class Detector(Protocol):
    """What the bank needs of a detector (River's API plus read-only extras)."""

    @property
    def drift_detected(self) -> bool: ...
    @property
    def statistic(self) -> float: ...
    @property
    def threshold(self) -> float: ...
    @property
    def estimate(self) -> float: ...

    def update(self, x: Any) -> Any: ...
    def to_state(self) -> dict[str, Any]: ...


KINDS: dict[str, Any] = {"adwin": ADWIN, "hddm_a": HDDMA, "kl_window": KLWindow,
                         "mmd": MMDWindow}


def detector_from_state(kind: str, state: dict[str, Any]) -> Any:
    """Rebuild a detector of a named kind from its state."""
    cls = KINDS.get(kind)
    if cls is None:
        raise StateCorrupt(f"unknown detector kind {kind!r}; known: {', '.join(KINDS)}")
    try:
        return cls.from_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise StateCorrupt(f"{kind} state does not load: {exc!r}") from exc


def check_header(doc: dict[str, Any]) -> None:
    """Refuse a document of another format or a version this code does not read."""
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise StateVersionUnsupported(f"not a {STATE_FORMAT} document")
    if doc.get("version") != STATE_VERSION:
        raise StateVersionUnsupported(
            f"detector bank state version {doc.get('version')!r}; this code reads {STATE_VERSION}")
