"""drift-distill: the service that composes `stream` and `detectors` with APO training."""

__version__ = "0.1.0"
