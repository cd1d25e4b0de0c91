"""The optional C extensions and the public switch that turns them off.

Two inner loops have C versions (``stream._textscan``, ``detectors._kernels``) that
``pip install`` builds where a compiler is present; each has a Python version giving the
same results. Setting ``DISTILL_NO_C_EXT=1`` makes every module use the Python versions, as
an install without a compiler does, so that path can be tested and compared on any machine.

>>> optional_extension("stream._no_such_extension") is None
True
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_C_EXT_ENV = "DISTILL_NO_C_EXT"


def c_extensions_enabled() -> bool:
    """False when ``DISTILL_NO_C_EXT`` is set to anything but empty or ``0``."""
    return os.environ.get(NO_C_EXT_ENV, "").strip() in ("", "0")


def optional_extension(name: str) -> ModuleType | None:
    """The compiled module ``name``, or None when it is not built or the switch is set."""
    if not c_extensions_enabled():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:  # a build without a C compiler
        return None
