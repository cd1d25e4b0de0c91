"""APO distillation: bootstrap SFT, consensus synthesis, Plackett-Luce APO (arXiv 2510.04142).

Importing this package imports torch and transformers; the monitor and the CLI's
``--help`` never do. The continual trainer builds on the names below:

* :class:`APOConfig` (``transformers.TrainingArguments`` + the APO fields),
* :func:`bootstrap` -> model dir (the frozen reference pi_st),
* :func:`train_round` -> :class:`RoundResult` (model dir + metrics),
* :func:`evaluate` -> agreement with the consensus, accuracy / per-finding Top-1.
"""

from distill.apo.bootstrap import bootstrap
from distill.apo.config import APOConfig
from distill.apo.trainer import APOTrainer
from distill.apo.training import RoundResult, evaluate, make_preference_groups, train_round

__all__ = ["APOConfig", "APOTrainer", "RoundResult", "bootstrap", "evaluate",
           "make_preference_groups", "train_round"]
