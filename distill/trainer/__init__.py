"""The continual trainer: a durable group buffer, a model registry, triggers and one round.

Nothing here imports torch at module level; the round imports :mod:`distill.apo` when it
trains, so ``distill status`` can read the registry without the training extra.
"""

from distill.trainer.buffer import GroupBuffer, Selection
from distill.trainer.registry import Registry, Version, registry_summary
from distill.trainer.triggers import TriggerPolicy

__all__ = ["GroupBuffer", "Registry", "Selection", "TriggerPolicy", "Version",
           "registry_summary"]
