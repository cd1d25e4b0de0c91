"""Exceptions of the continual trainer: broken infrastructure or a refused operation.

A round that fails in training is recorded as a failed run (a value), not only raised.
"""


class TrainerError(Exception):
    """Base class of every trainer error."""


class RoundBusyError(TrainerError):
    """Another process holds the round lock of this state directory."""


class RegistryCorruptError(TrainerError):
    """registry.json exists but cannot be read; it is never rewritten silently."""


class UnknownVersionError(TrainerError):
    """A version named by the caller is not in the registry, or has no weights."""


class NoStudentError(TrainerError):
    """No reference model is registered and no student directory was given to bootstrap."""


class NothingToTrainError(TrainerError):
    """The buffer holds no training groups for this round."""


class RoundInterruptedError(TrainerError):
    """A stop was asked for (SIGTERM, SIGINT) while a round ran; it ended at a step boundary."""
