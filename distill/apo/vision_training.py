"""Bootstrap and APO rounds for a vision-language student: the text round's stages with
image + text inputs from the student's processor.

:func:`distill.apo.bootstrap.bootstrap` and :func:`distill.apo.training.train_round` hand over
here when the student directory is an image-text-to-text model. Each group's images are
opened by reference under ``config.image_roots`` with the hash checked; a group whose
image is missing, changed or outside the roots is left out of the round and counted
(``image_failures/<reason>`` in the metrics), the other groups train as usual. Groups
without images train on their text alone.

Consensus synthesis (``synthesis="generate"``) builds the student's context through its
processor with the case's images (:func:`distill.apo.synthesis.hf_vision_generate_fn`);
the majority check and the counted fallback are the text round's.
"""

from __future__ import annotations

import copy
import gc
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.apo.config import APOConfig
from distill.groups import TeacherGroup

if TYPE_CHECKING:
    from distill.apo.training import RoundResult


def _images(groups: Sequence[TeacherGroup], config: APOConfig
            ) -> tuple[list[tuple[TeacherGroup, list[Any]]], Counter[str]]:
    from distill.apo.vision import load_group_images

    return load_group_images(groups, config.image_roots or [])


def _policy(model_dir: Path, config: APOConfig) -> tuple[Any, Any]:
    from distill.apo.vision import apply_vision_lora, load_vision_student

    model, processor = load_vision_student(model_dir, trainable=True,
                                           freeze_vision=config.freeze_vision)
    if config.lora:
        model = apply_vision_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout)
    return model, processor


def bootstrap_vision(student_dir: Path, groups: Sequence[TeacherGroup], out_dir: Path,
                     config: APOConfig, callbacks: Sequence[Any] = ()) -> Path:
    """SFT on every teacher trajectory with the case's images; a plain VLM dir out."""
    from transformers import PrinterCallback, Trainer

    from distill.apo.bootstrap import _sft_args
    from distill.apo.vision import save_vision_student
    from distill.apo.vision_encode import VisionSFTCollator, encode_vision_pair

    loaded, _ = _images(groups, config)
    model, processor = _policy(Path(student_dir), config)
    cache: dict[Any, Any] = {}
    data = [encode_vision_pair(processor, g.prompt or "", imgs, a.output, config.max_length,
                               cache)
            for g, imgs in loaded for a in g.answers if a.output.strip()]
    if not data:
        raise ValueError("bootstrap needs at least one teacher trajectory with usable images")
    trainer = Trainer(model=model, args=_sft_args(config), train_dataset=data,
                      data_collator=VisionSFTCollator(processor.tokenizer.pad_token_id),
                      processing_class=processor.tokenizer, callbacks=list(callbacks) or None)
    if trainer.args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
    trainer.train()
    return save_vision_student(trainer.model, processor, Path(out_dir))


def train_round_vision(policy_dir: Path, reference_dir: Path, groups: Sequence[TeacherGroup],
                       out_dir: Path, config: APOConfig, progress: bool = True,
                       callbacks: Sequence[Any] = (),
                       on_batch: Callable[[str, int, int], None] | None = None) -> RoundResult:
    """One APO round (see :func:`distill.apo.training.train_round`) for a vision student."""
    from distill.apo.training import RoundResult, make_preference_groups, train_to_end
    from distill.apo.vision import apply_vision_lora, load_vision_student, save_vision_student
    from distill.apo.vision_encode import VisionAPOTrainer

    started = time.perf_counter()
    loaded, failures = _images(groups, config)
    model, processor = load_vision_student(Path(policy_dir), trainable=True,
                                           freeze_vision=config.freeze_vision)

    def stage(name: str) -> Callable[[int, int], None] | None:
        return None if on_batch is None else (lambda done, total: on_batch(name, done, total))

    prefs = make_preference_groups([g for g, _ in loaded], config, model, processor,
                                   stage("synthesis"), images=[imgs for _, imgs in loaded])
    encoded = _encode_with_reference(prefs, {g.sample_id: imgs for g, imgs in loaded},
                                     Path(reference_dir), config, failures,
                                     stage("reference"))
    if config.lora:
        model = apply_vision_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout)
    args = copy.deepcopy(config)
    args.disable_tqdm = not progress
    args.micro_batch_candidates = 0
    trainer = VisionAPOTrainer(model=model, args=args, train_dataset=encoded,
                               processing_class=processor.tokenizer,
                               callbacks=list(callbacks) or None)
    output, train_seconds = train_to_end(trainer, progress)
    save_vision_student(trainer.model, processor, Path(out_dir))
    metrics = _round_metrics(trainer, output, len(encoded), prefs, train_seconds)
    metrics["seconds"] = time.perf_counter() - started
    metrics.update({f"image_failures/{k}": float(v) for k, v in sorted(failures.items())})
    return RoundResult(Path(out_dir), metrics)


def _encode_with_reference(prefs: Sequence[Any], images: dict[str, list[Any]],
                           reference_dir: Path, config: APOConfig, failures: Counter[str],
                           on_batch: Callable[[int, int], None] | None = None) -> list[Any]:
    """Every group's candidates through the reference's processor, with the reference's
    log-probs attached (the reference is freed afterwards)."""
    import torch

    from distill.apo.vision import load_vision_student
    from distill.apo.vision_encode import VisionGroup, attach_vision_reference, encode_vision_pair

    reference, processor = load_vision_student(reference_dir)
    cache: dict[Any, Any] = {}
    encoded = [VisionGroup(p.sample_id, tuple(
        encode_vision_pair(processor, p.prompt, images[p.sample_id], text, config.max_length,
                           cache) for text in (p.positive, *p.negatives)), tuple(p.weights))
        for p in prefs if p.negatives]
    if not encoded:
        raise ValueError(f"no usable preference group (image failures: {dict(failures)})")
    encoded = attach_vision_reference(encoded, reference, processor.tokenizer.pad_token_id,
                                      config.reference_batch_size,
                                      next(reference.parameters()).device, on_batch)
    del reference
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return encoded


def _round_metrics(trainer: Any, output: Any, groups: int, prefs: Sequence[Any],
                   train_seconds: float) -> dict[str, float]:
    from distill.apo.training import _mean

    margins = trainer.round_history.get("rewards/margins") or [0.0]
    return {
        "loss": float(output.training_loss),
        "reward_margin": sum(margins) / len(margins), "reward_margin_last": margins[-1],
        "reward_accuracy": _mean(trainer.round_history.get("rewards/accuracies")),
        "steps": float(trainer.state.global_step), "groups": float(groups),
        "synthesis_fallbacks": float(sum(p.fallback for p in prefs)),
        "reference_cache_hits": 0.0,
        "tokens_per_s": trainer.tokens_seen / max(train_seconds, 1e-9),
    }
