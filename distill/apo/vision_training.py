"""Bootstrap and APO rounds for a vision-language student: the text round's stages with
image + text inputs from the student's processor.

:func:`distill.apo.bootstrap.bootstrap` and :func:`distill.apo.training.train_round` hand over
here when the student directory is an image-text-to-text model. Each group's images are
opened by reference under ``config.image_roots`` with the hash checked; a group whose
image is missing, changed or outside the roots is left out of the round and counted
(``image_failures/<reason>`` in the metrics), the other groups train as usual. Groups
without images train on their text alone.

Consensus synthesis runs in ``best_teacher`` mode here (the most-supported teacher's
trajectory is the positive): generating with images in the context is not wired yet.
"""

from __future__ import annotations

import copy
import gc
import time
from collections import Counter
from collections.abc import Sequence
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
                     config: APOConfig) -> Path:
    """SFT on every teacher trajectory with the case's images; a plain VLM dir out."""
    from transformers import Trainer

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
                      processing_class=processor.tokenizer)
    trainer.train()
    return save_vision_student(trainer.model, processor, Path(out_dir))


def train_round_vision(policy_dir: Path, reference_dir: Path, groups: Sequence[TeacherGroup],
                       out_dir: Path, config: APOConfig, progress: bool = True) -> RoundResult:
    """One APO round (see :func:`distill.apo.training.train_round`) for a vision student."""
    import torch
    from transformers import PrinterCallback

    from distill.apo.training import RoundResult, _mean, make_preference_groups
    from distill.apo.vision import load_vision_student, save_vision_student
    from distill.apo.vision_encode import (
        VisionAPOTrainer,
        VisionGroup,
        attach_vision_reference,
        encode_vision_pair,
    )

    started = time.perf_counter()
    loaded, failures = _images(groups, config)
    config = copy.deepcopy(config)
    config.synthesis = "best_teacher"
    prefs = make_preference_groups([g for g, _ in loaded], config)
    images = {g.sample_id: imgs for g, imgs in loaded}
    reference, processor = load_vision_student(Path(reference_dir))
    cache: dict[Any, Any] = {}
    encoded = [VisionGroup(p.sample_id, tuple(
        encode_vision_pair(processor, p.prompt, images[p.sample_id], text, config.max_length,
                           cache) for text in (p.positive, *p.negatives)), tuple(p.weights))
        for p in prefs if p.negatives]
    if not encoded:
        raise ValueError(f"no usable preference group (image failures: {dict(failures)})")
    pad = processor.tokenizer.pad_token_id
    encoded = attach_vision_reference(encoded, reference, pad, config.reference_batch_size,
                                      next(reference.parameters()).device)
    del reference
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    model, processor = _policy(Path(policy_dir), config)
    config.disable_tqdm = not progress
    config.micro_batch_candidates = 0
    trainer = VisionAPOTrainer(model=model, args=config, train_dataset=encoded,
                               processing_class=processor.tokenizer)
    if not progress:
        trainer.remove_callback(PrinterCallback)
    train_started = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - train_started
    save_vision_student(trainer.model, processor, Path(out_dir))
    margins = trainer.round_history.get("rewards/margins") or [0.0]
    metrics = {
        "loss": float(output.training_loss),
        "reward_margin": sum(margins) / len(margins), "reward_margin_last": margins[-1],
        "reward_accuracy": _mean(trainer.round_history.get("rewards/accuracies")),
        "steps": float(trainer.state.global_step), "groups": float(len(encoded)),
        "synthesis_fallbacks": float(sum(p.fallback for p in prefs)),
        "reference_cache_hits": 0.0,
        "tokens_per_s": trainer.tokens_seen / max(train_seconds, 1e-9),
        "seconds": time.perf_counter() - started,
        **{f"image_failures/{k}": float(v) for k, v in sorted(failures.items())},
    }
    return RoundResult(Path(out_dir), metrics)
