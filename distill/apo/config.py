"""`APOConfig`: ``transformers.TrainingArguments`` plus only the APO fields.

Like TRL's ``DPOConfig``, each field carries ``metadata={"help": ...}`` so the class can feed
``HfArgumentParser`` for CLI flags and YAML. Unlike TRL, names (``loss_type``, ``weighting``,
``synthesis``) and cross-field rules are checked in ``__post_init__``, so a typo fails at
construction with the field's name rather than at the first training step.

Inherited defaults changed here: ``report_to="none"``, ``remove_unused_columns=False`` (the
batches are preference groups, not model kwargs), ``save_strategy="no"`` (a round saves its
merged model once, at the end), ``logging_steps=1``, ``learning_rate=5e-5``,
``per_device_train_batch_size=1`` (groups per device per step), ``bf16=None`` (= on where CUDA
supports it, off on CPU).

Examples
--------
>>> APOConfig(output_dir="/tmp/x", loss_type="apo").beta
0.1
>>> APOConfig(output_dir="/tmp/x", loss_type="ipo")
Traceback (most recent call last):
...
ValueError: loss_type: 'ipo' is not one of ['apo', 'dpo_pairwise']
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

LOSS_TYPES = ("apo", "dpo_pairwise")
WEIGHTINGS = ("uniform", "drift")
SYNTHESIS_MODES = ("generate", "best_teacher")

DEFAULT_SYNTHESIS_TEMPLATE = (
    "Several experts answered the question below. Write one careful answer that keeps "
    "what most of them agree on, and end with 'Final answer: <answer>'.\n\n"
    "Question:\n{prompt}\n\n{trajectories}"
)
DEFAULT_TRAJECTORY_TEMPLATE = "Expert {index}:\n{output}\n"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class APOConfig(TrainingArguments):
    """Configuration of bootstrap SFT, consensus synthesis and APO rounds.

    Parameters
    ----------
    loss_type
        ``"apo"``: weighted Plackett-Luce, one positive over N negatives (the paper).
        ``"dpo_pairwise"``: sigmoid DPO averaged over the group's N pairs (the authors' script).
    beta
        Reward scale in ``r = beta * (log pi_theta - log pi_st)``; 0.1 as in the paper.
    alpha_nll
        Weight of a per-token NLL term on the positive; 0 (off) as in the paper.
    weighting
        ``"uniform"`` (every negative weight 1, the paper's ablation) or ``"drift"``:
        ``w_u = (1 + drift_weight_scale * evidence_u) * (consensus_weight if the teacher's
        answer equals the consensus else 1)``.
    lora, lora_r, lora_alpha, lora_dropout, lora_target_modules
        PEFT LoRA on all linear layers (r=8, alpha=32 as in the paper), or a full fine-tune.
        Rounds always return a merged, plain model directory.
    max_length, max_prompt_length
        Token budget per candidate; the prompt keeps its end, the response its start.
    share_prompt
        The 1+N candidates share their prompt: run it once per group and reuse its KV cache
        (same log-probs and gradients, fewer tokens).
    micro_batch_candidates
        Candidates per forward pass; 0 = all candidates of the step's groups in one batch.
        Smaller values trade a second (no-grad) forward for memory, with the same gradient.
    synthesis, synthesis_template, ...
        How the positive is made; see :mod:`distill.apo.synthesis`.
    image_roots, freeze_vision
        Vision-language students (:mod:`distill.apo.vision_training`): where group images are
        read (hash checked), and whether the vision tower stays frozen (the default).
    """

    loss_type: str = field(default="apo", metadata=_help(f"one of {list(LOSS_TYPES)}"))
    beta: float = field(default=0.1, metadata=_help("reward scale beta (> 0)"))
    alpha_nll: float = field(default=0.0, metadata=_help("weight of NLL on the positive (>= 0)"))
    weighting: str = field(default="uniform", metadata=_help(f"one of {list(WEIGHTINGS)}"))
    consensus_weight: float = field(
        default=0.5, metadata=_help("drift weighting: factor for negatives whose answer equals "
                                    "the consensus answer, in [0, 1]"))
    drift_weight_scale: float = field(
        default=2.0, metadata=_help("drift weighting: w_u = 1 + scale * evidence_u (>= 0)"))
    lora: bool = field(default=True, metadata=_help("LoRA adapters (True) or full fine-tune"))
    lora_r: int = field(default=8, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha"))
    lora_dropout: float = field(default=0.0, metadata=_help("LoRA dropout in [0, 1)"))
    lora_target_modules: str = field(default="all-linear",
                                     metadata=_help("PEFT target_modules, 'all-linear' or a "
                                                    "comma-separated list of module names"))
    max_length: int = field(default=512, metadata=_help("tokens per candidate (prompt+response)"))
    max_prompt_length: int = field(default=256, metadata=_help("prompt tokens kept (its end)"))
    share_prompt: bool = field(
        default=True, metadata=_help("run each group's prompt once and reuse its KV cache for "
                                     "all candidates (off with micro-batches or gradient "
                                     "checkpointing)"))
    micro_batch_candidates: int = field(
        default=0, metadata=_help("candidates per forward; 0 = the whole step in one batch"))
    reference_batch_size: int = field(default=16, metadata=_help("batch size of the one-off "
                                                                  "reference scoring pass"))
    reference_cache: str | None = field(
        default=None, metadata=_help("SQLite file keeping reference log-probs across rounds "
                                     "(keyed by the reference model and the tokens), so "
                                     "replayed groups skip the reference pass; None = off"))
    synthesis: str = field(default="generate", metadata=_help(f"one of {list(SYNTHESIS_MODES)}"))
    synthesis_template: str = field(
        default=DEFAULT_SYNTHESIS_TEMPLATE,
        metadata=_help("prompt for consensus synthesis; needs {prompt} and {trajectories}"))
    synthesis_trajectory_template: str = field(
        default=DEFAULT_TRAJECTORY_TEMPLATE,
        metadata=_help("one teacher trajectory inside {trajectories}; needs {output}"))
    synthesis_max_new_tokens: int = field(default=256, metadata=_help("tokens generated"))
    synthesis_max_chars_per_teacher: int = field(
        default=2000, metadata=_help("each trajectory is cut to this many characters"))
    synthesis_batch_size: int = field(default=8, metadata=_help("prompts generated at once"))
    bootstrap_learning_rate: float | None = field(
        default=None, metadata=_help("SFT learning rate; None = learning_rate"))
    bootstrap_max_steps: int | None = field(
        default=None, metadata=_help("SFT steps; None = max_steps / num_train_epochs"))
    image_roots: list[str] | None = field(
        default=None, metadata=_help("vision students: directories or object-store prefixes "
                                     "the groups' image references are read under (the "
                                     "monitor's serve.image_roots)"))
    freeze_vision: bool = field(
        default=True, metadata=_help("vision students: keep the vision tower frozen"))
    # Inherited fields whose defaults change.
    report_to: str | list[str] | None = field(default="none", metadata=_help("integrations"))
    remove_unused_columns: bool = field(default=False, metadata=_help("must stay False"))
    save_strategy: str = field(default="no", metadata=_help("Trainer checkpoints mid-round"))
    logging_steps: float = field(default=1, metadata=_help("log every X steps"))
    learning_rate: float = field(default=5e-5, metadata=_help("AdamW learning rate"))
    per_device_train_batch_size: int = field(default=1, metadata=_help("groups per step"))
    # None until __post_init__ resolves it (on with CUDA bf16), so wider than the base's bool.
    bf16: bool | None = field(  # type: ignore[assignment]
        default=None, metadata=_help("bf16 autocast; None = on with CUDA"))

    def __post_init__(self) -> None:
        self._check_names()
        self._check_ranges()
        self._check_rules()
        if self.bf16 is None:
            self.bf16 = _cuda_bf16() and not self.fp16 and not self.use_cpu
        super().__post_init__()  # type: ignore[no-untyped-call]  # unannotated in transformers

    def _check_names(self) -> None:
        for name, valid in (("loss_type", LOSS_TYPES), ("weighting", WEIGHTINGS),
                            ("synthesis", SYNTHESIS_MODES)):
            value = getattr(self, name)
            if value not in valid:
                raise ValueError(f"{name}: {value!r} is not one of {list(valid)}")

    def _check_ranges(self) -> None:
        checks = (
            ("beta", self.beta > 0, "must be > 0"),
            ("alpha_nll", self.alpha_nll >= 0, "must be >= 0"),
            ("consensus_weight", 0 <= self.consensus_weight <= 1, "must be in [0, 1]"),
            ("drift_weight_scale", self.drift_weight_scale >= 0, "must be >= 0"),
            ("lora_r", self.lora_r > 0, "must be > 0"),
            ("lora_alpha", self.lora_alpha > 0, "must be > 0"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)"),
            ("max_length", self.max_length >= 8, "must be >= 8"),
            ("max_prompt_length", self.max_prompt_length >= 1, "must be >= 1"),
            ("micro_batch_candidates", self.micro_batch_candidates >= 0, "must be >= 0"),
            ("reference_batch_size", self.reference_batch_size > 0, "must be > 0"),
            ("synthesis_max_new_tokens", self.synthesis_max_new_tokens > 0, "must be > 0"),
            ("synthesis_batch_size", self.synthesis_batch_size > 0, "must be > 0"),
            ("bootstrap_max_steps", self.bootstrap_max_steps is None
             or self.bootstrap_max_steps > 0, "must be > 0 or None"),
        )
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"{name}: {why} (got {getattr(self, name)!r})")

    def _check_rules(self) -> None:
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"max_prompt_length: must be < max_length ({self.max_length}) "
                             "so every candidate keeps response tokens")
        if self.remove_unused_columns:
            raise ValueError("remove_unused_columns: must be False; APO batches are preference "
                             "groups, not model keyword arguments")
        for key in ("{prompt}", "{trajectories}"):
            if key not in self.synthesis_template:
                raise ValueError(f"synthesis_template: must contain {key}")
        if "{output}" not in self.synthesis_trajectory_template:
            raise ValueError("synthesis_trajectory_template: must contain {output}")


def _cuda_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
