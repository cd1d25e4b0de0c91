"""The API the continual trainer builds on: one APO round, and the evaluation gate.

``train_round`` = consensus synthesis with the current policy -> preference groups
(1 positive, N weighted negatives) -> reference log-probs, cached once -> APO steps
(LoRA or full) -> merged model saved with ``save_pretrained`` (safetensors).
Atomic promotion (temp dir + rename) belongs to the caller.
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.apo.config import APOConfig
from distill.apo.evaluate import evaluate
from distill.groups import TeacherGroup

__all__ = ["RoundResult", "TrainingStopped", "evaluate", "make_preference_groups",
           "train_round"]


class TrainingStopped(Exception):
    """A callback stopped the APO steps early; nothing was saved."""


def train_to_end(trainer: Any, progress: bool) -> tuple[Any, float]:
    """``trainer.train()`` and its wall seconds; :class:`TrainingStopped` when a stop request
    ended it before its last step (the caller must not save a partial student)."""
    from transformers import PrinterCallback

    if not progress:
        trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - started
    if trainer.state.global_step < trainer.state.max_steps:
        raise TrainingStopped(f"stopped after {trainer.state.global_step} of "
                              f"{trainer.state.max_steps} steps")
    return output, seconds


@dataclass
class RoundResult:
    """Where the round's model is, and what the round measured.

    ``metrics``: loss (mean over steps), reward_margin (mean r+ - max r_u over steps),
    reward_margin_last, reward_accuracy, steps, groups, synthesis_fallbacks,
    reference_cache_hits (candidates whose reference log-prob came from
    ``config.reference_cache``), tokens_per_s (policy tokens forwarded per training second),
    seconds (whole round).
    """

    model_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)


def make_preference_groups(groups: Sequence[TeacherGroup], config: APOConfig,
                           model: Any = None, tokenizer: Any = None,
                           on_batch: Callable[[int, int], None] | None = None,
                           images: Sequence[Sequence[Any]] | None = None) -> list[Any]:
    """Synthesis then weighting; ``model`` writes the positives when ``synthesis='generate'``.

    ``images`` (one list per group, opened) marks a vision-language student: ``tokenizer``
    is then its processor and each case's images are in the synthesis context.
    """
    from distill.apo.preference import build_preference_group
    from distill.apo.synthesis import hf_generate_fn, hf_vision_generate_fn, synthesize

    generate: Any = None
    if config.synthesis == "generate":
        if model is None or tokenizer is None:
            raise ValueError("synthesis='generate' needs the student model and tokenizer")
        generate = (hf_generate_fn(model, tokenizer, config.synthesis_max_new_tokens,
                                   config.max_length) if images is None else
                    hf_vision_generate_fn(model, tokenizer, config.synthesis_max_new_tokens))
    keep = [i for i, g in enumerate(groups) if g.answers]
    usable = [groups[i] for i in keep]
    made = synthesize(usable, generate, template=config.synthesis_template,
                      trajectory_template=config.synthesis_trajectory_template,
                      max_chars=config.synthesis_max_chars_per_teacher,
                      batch_size=config.synthesis_batch_size, on_batch=on_batch,
                      images=None if images is None else [images[i] for i in keep])
    return [build_preference_group(g, s.positive, fallback=s.fallback,
                                   weighting=config.weighting,
                                   consensus_weight=config.consensus_weight,
                                   drift_weight_scale=config.drift_weight_scale)
            for g, s in zip(usable, made, strict=True)]


def _reference_logps(reference_dir: Path, encoded: list[Any], pad_id: int,
                     config: APOConfig, on_batch: Callable[[int, int], None] | None = None
                     ) -> tuple[list[Any], int]:
    """Reference log-probs of every candidate, and how many came from the cross-round cache."""
    import torch

    from distill.apo.data import attach_reference
    from distill.apo.refcache import ReferenceCache, model_identity
    from distill.apo.student import load_student

    cache = None
    if config.reference_cache:
        cache = ReferenceCache(Path(config.reference_cache), model_identity(reference_dir))
    reference, _ = load_student(reference_dir)
    device = next(reference.parameters()).device
    out = attach_reference(encoded, reference, pad_id, config.reference_batch_size, device,
                           cache, on_batch)
    del reference
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out, cache.hits if cache is not None else 0


def train_round(policy_dir: Path, reference_dir: Path, groups: Sequence[TeacherGroup],
                out_dir: Path, config: APOConfig, progress: bool = True,
                callbacks: Sequence[Any] = (),
                on_batch: Callable[[str, int, int], None] | None = None) -> RoundResult:
    """One APO round over ``groups``; the merged policy is saved to ``out_dir``.

    ``callbacks`` are ``transformers.TrainerCallback`` objects (the trainer's progress and
    stop flag); when one stops training before ``max_steps``, :class:`TrainingStopped` is
    raised instead of saving a model that did not finish.
    ``on_batch(stage, done, total)`` runs after each batch of the stages without optimizer
    steps (``synthesis``, ``reference``); it may raise to end the round there.
    """

    from distill.apo.data import encode_groups
    from distill.apo.student import apply_lora, load_student, save_student
    from distill.apo.trainer import APOTrainer
    from distill.apo.vision import is_vision_student

    if is_vision_student(Path(policy_dir)):  # image + text inputs (distill.apo.vision_training)
        from distill.apo.vision_training import train_round_vision

        return train_round_vision(Path(policy_dir), Path(reference_dir), groups,
                                  Path(out_dir), config, progress, callbacks, on_batch)
    started = time.perf_counter()
    model, tokenizer = load_student(Path(policy_dir), trainable=not config.lora)
    def stage(name: str) -> Callable[[int, int], None] | None:
        return None if on_batch is None else (lambda done, total: on_batch(name, done, total))

    prefs = [p for p in make_preference_groups(groups, config, model, tokenizer,
                                               stage("synthesis")) if p.negatives]
    if not prefs:
        raise ValueError("no usable preference group: every group lacks teacher answers")
    encoded = encode_groups(prefs, tokenizer, config.max_length, config.max_prompt_length)
    encoded, ref_hits = _reference_logps(Path(reference_dir), encoded, tokenizer.pad_token_id,
                                         config, stage("reference"))
    if config.lora:
        model = apply_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout,
                           config.lora_target_modules)
    args = copy.deepcopy(config)
    args.disable_tqdm = not progress
    trainer = APOTrainer(model=model, args=args, train_dataset=encoded,
                         processing_class=tokenizer, callbacks=list(callbacks) or None)
    output, train_seconds = train_to_end(trainer, progress)
    save_student(trainer.model, tokenizer, Path(out_dir))
    hist = trainer.round_history
    margins = hist.get("rewards/margins") or [0.0]
    metrics = {
        "loss": float(output.training_loss),
        "reward_margin": sum(margins) / len(margins),
        "reward_margin_last": margins[-1],
        "reward_accuracy": _mean(hist.get("rewards/accuracies")),
        "steps": float(trainer.state.global_step),
        "groups": float(len(prefs)),
        "synthesis_fallbacks": float(sum(p.fallback for p in prefs)),
        "reference_cache_hits": float(ref_hits),
        "tokens_per_s": trainer.tokens_seen / max(train_seconds, 1e-9),
        "seconds": time.perf_counter() - started,
    }
    return RoundResult(Path(out_dir), metrics)


def _mean(values: list[float] | None) -> float:
    return sum(values) / len(values) if values else 0.0
