"""Bootstrap: SFT of the student on every teacher's trajectory (prompt -> trajectory).

The paper's first stage. Plain token NLL on the response tokens only (the prompt is
masked out of the labels), through the stock ``transformers.Trainer``. The result is
saved as a plain model dir (LoRA merged) and becomes the frozen reference ``pi_st`` of
every later APO round.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.apo.config import APOConfig
from distill.apo.encode import Encoded, collate, encode_pair
from distill.groups import TeacherGroup


def sft_pairs(groups: Sequence[TeacherGroup]) -> list[tuple[str, str]]:
    """(prompt, trajectory) for every teacher answer with a non-empty output."""
    return [(g.prompt or "", a.output) for g in groups for a in g.answers if a.output.strip()]


class SFTCollator:
    """Left-padded batch with ``labels`` = input ids on response tokens, -100 elsewhere."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: Sequence[Encoded]) -> dict[str, Any]:
        out = collate(batch, self.pad_id)
        labels = out["input_ids"].masked_fill(~out.pop("response_mask"), -100)
        out["labels"] = labels
        return out


def _sft_args(config: APOConfig) -> APOConfig:
    args = copy.deepcopy(config)
    if config.bootstrap_learning_rate is not None:
        args.learning_rate = config.bootstrap_learning_rate
    if config.bootstrap_max_steps is not None:
        args.max_steps = config.bootstrap_max_steps
    return args


def bootstrap(student_dir: Path, groups: Sequence[TeacherGroup], out_dir: Path,
              config: APOConfig, callbacks: Sequence[Any] = ()) -> Path:
    """SFT ``student_dir`` on all teachers' trajectories of ``groups``; returns ``out_dir``.

    ``out_dir`` holds a plain model (LoRA merged when ``config.lora``) and its tokenizer.
    ``callbacks``: ``transformers.TrainerCallback`` objects (progress, stop flag). With
    ``disable_tqdm`` the loss dicts are not printed (they reach the callbacks' ``on_log``).
    """
    from transformers import PrinterCallback, Trainer

    from distill.apo.student import apply_lora, load_student, save_student
    from distill.apo.vision import is_vision_student

    if is_vision_student(Path(student_dir)):  # image + text inputs (distill.apo.vision_training)
        from distill.apo.vision_training import bootstrap_vision

        return bootstrap_vision(Path(student_dir), groups, Path(out_dir), config, callbacks)
    pairs = sft_pairs(groups)
    if not pairs:
        raise ValueError("bootstrap needs at least one teacher trajectory")
    model, tokenizer = load_student(Path(student_dir), trainable=not config.lora)
    data = [encode_pair(tokenizer, p, r, config.max_length, config.max_prompt_length)
            for p, r in pairs]
    if config.lora:
        model = apply_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout,
                           config.lora_target_modules)
    out_dir = Path(out_dir)
    trainer = Trainer(model=model, args=_sft_args(config), train_dataset=data,
                      data_collator=SFTCollator(tokenizer.pad_token_id),
                      processing_class=tokenizer, callbacks=list(callbacks) or None)
    if trainer.args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
    trainer.train()
    return save_student(trainer.model, tokenizer, out_dir)
