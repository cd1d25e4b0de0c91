"""Image + text inputs of the vision-language student, built by its own processor, and the
scoring, SFT and APO pieces that take them.

The text path (:mod:`distill.apo.encode`) left-pads and shares each prompt's KV cache; a
VLM's prompt holds image tokens whose features the model computes from ``pixel_values``
(and, per family, ``image_grid_thw`` or ``pixel_attention_mask``), and some families build
their own position ids (Qwen2-VL's 3-D rope). So here every candidate is one row, RIGHT
padded (positions start at 0 in every row, whatever the family), the processor's image
tensors travel with the rows (concatenated along the first dimension, which is the image
axis of LLaVA and Qwen2-VL, and the row axis of Idefics3 when each row has the same number
of images), and the full logits are taken. Families whose processor marks the image tokens
(``mm_token_type_ids``: Qwen2-VL builds its 3-D rope from them) get that row of marks
carried with the prompt, zeros over the response and the padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from distill.apo.data import group_layout
from distill.apo.trainer import APOTrainer

_TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")


@dataclass(frozen=True, slots=True)
class VisionEncoded:
    """One prompt (images included) + response; ``image_inputs`` are the processor's tensors,
    ``token_types`` its ``mm_token_type_ids`` of the prompt (None where it gives none)."""

    input_ids: list[int]
    prompt_len: int
    image_inputs: dict[str, Any]
    token_types: tuple[int, ...] | None = None

    @property
    def response_len(self) -> int:
        return len(self.input_ids) - self.prompt_len


def vision_prompt(processor: Any, prompt: str, images: Sequence[Any]) -> str:
    """The user turn (one image part per image, then the text) and the assistant header."""
    parts = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
    text: str = processor.apply_chat_template([{"role": "user", "content": parts}],
                                              tokenize=False, add_generation_prompt=True)
    return text


def encode_prompt(processor: Any, prompt: str, images: Sequence[Any]
                  ) -> tuple[list[int], dict[str, Any], tuple[int, ...] | None]:
    """Prompt token ids (image tokens expanded by the processor), its image tensors and its
    image-token marks (``mm_token_type_ids``, where the processor gives them)."""
    out = processor(text=[vision_prompt(processor, prompt, images)],
                    images=[list(images)] if images else None, return_tensors="pt")
    ids = out["input_ids"][0].tolist()
    types = out.get("mm_token_type_ids")
    return (ids, {k: v for k, v in out.items() if k not in _TEXT_KEYS},
            None if types is None else tuple(types[0].tolist()))


def encode_vision_pair(processor: Any, prompt: str, images: Sequence[Any], response: str,
                       max_length: int,
                       prompt_cache: dict[Any, Any] | None = None) -> VisionEncoded:
    """The response keeps its start and an EOS; at least one response token survives.

    The prompt is never cut (cutting would drop image tokens the pixels must match), so
    ``max_length`` bounds the response. ``prompt_cache`` (keyed by prompt and image ids)
    saves re-processing a prompt shared by the candidates of one group.
    """
    key = (prompt, tuple(id(i) for i in images))
    cached = prompt_cache.get(key) if prompt_cache is not None else None
    if cached is None:
        cached = encode_prompt(processor, prompt, images)
        if prompt_cache is not None:
            prompt_cache[key] = cached
    p_ids, image_inputs, types = cached
    tok = processor.tokenizer
    r_ids = [*tok(response, add_special_tokens=False).input_ids, tok.eos_token_id]
    r_ids = r_ids[: max(1, max_length - len(p_ids))]
    return VisionEncoded(p_ids + r_ids, len(p_ids), image_inputs, types)


def collate_vision(batch: Sequence[VisionEncoded], pad_id: int) -> dict[str, Any]:
    """Right-padded ids, attention and response masks, and the rows' image tensors."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    resp = torch.zeros((len(batch), width), dtype=torch.bool)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        attn[i, :n] = 1
        resp[i, e.prompt_len:n] = True
    out: dict[str, Any] = {"input_ids": ids, "attention_mask": attn, "response_mask": resp}
    if any(e.token_types is not None for e in batch):
        types = torch.zeros((len(batch), width), dtype=torch.long)
        for i, e in enumerate(batch):
            if e.token_types is not None:
                types[i, :len(e.token_types)] = torch.tensor(e.token_types, dtype=torch.long)
        out["mm_token_type_ids"] = types
    keys = dict.fromkeys(k for e in batch for k in e.image_inputs)
    for k in keys:
        parts = [e.image_inputs.get(k) for e in batch]
        present = [p for p in parts if p is not None]
        if present[0].dim() == _ROW_MAJOR.get(k):
            out[k] = _stack_rows(parts)
        else:  # one entry per image: the rows without images add nothing
            out[k] = torch.cat(present, 0)
    return out


#: Image tensors whose first axis is the text row (Idefics3 / SmolVLM: rows x images x ...),
#: by key and number of dimensions; the others have one entry per image (LLaVA, Qwen2-VL).
_ROW_MAJOR = {"pixel_values": 5, "pixel_attention_mask": 4}


def _stack_rows(parts: Sequence[Any]) -> Any:
    """Row-major image tensors of rows with different image counts (or none): zero padding,
    which these families drop as "no image"."""
    present = [p for p in parts if p is not None]
    template, n = present[0], max(p.shape[1] for p in present)
    out = torch.zeros((len(parts), n, *template.shape[2:]), dtype=template.dtype)
    for i, p in enumerate(parts):
        if p is not None:
            out[i, :p.shape[1]] = p[0]
    return out


def vision_logps(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Summed response log-probs per row and the response token counts (grad if enabled)."""
    inputs = {k: v for k, v in batch.items() if k not in ("response_mask", "labels")
              and k in _model_keys(batch)}
    out = model(**inputs, use_cache=False)
    logits = out.logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    mask = batch["response_mask"][:, 1:]
    token_logps = -torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets,
                                                     reduction="none")
    return (token_logps * mask).sum(1), mask.sum(1)


def _model_keys(batch: dict[str, Any]) -> set[str]:
    skip = {"group_index", "weights", "neg_mask", "ref_logps", "response_mask", "labels"}
    return {k for k in batch if k not in skip}


def vision_score_all(model: Any, encoded: Sequence[VisionEncoded], pad_id: int,
                     batch_size: int = 32, device: Any = None) -> list[float]:
    """Summed response log-probs of many rows, without gradients (reference, evaluation)."""
    scores: list[float] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = collate_vision(encoded[start:start + batch_size], pad_id)
            if device is not None:
                batch = {k: v.to(device) for k, v in batch.items()}
            scores.extend(vision_logps(model, batch)[0].tolist())
    model.train(was_training)
    return scores


class VisionSFTCollator:
    """Right-padded rows with ``labels`` = ids on response tokens, -100 elsewhere."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: Sequence[VisionEncoded]) -> dict[str, Any]:
        out = collate_vision(batch, self.pad_id)
        out["labels"] = out["input_ids"].masked_fill(~out.pop("response_mask"), -100)
        return out


@dataclass(frozen=True, slots=True)
class VisionGroup:
    """Candidates of one preference group (positive first), same fields as ``EncodedGroup``."""

    sample_id: str
    candidates: tuple[VisionEncoded, ...]
    weights: tuple[float, ...]
    ref_logps: tuple[float, ...] | None = None


class VisionGroupCollator:
    """All candidates of a batch of groups as rows, plus the group layout of the APO loss."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, groups: Sequence[VisionGroup]) -> dict[str, Any]:
        if any(g.ref_logps is None for g in groups):
            raise ValueError("reference log-probs missing: score the groups with pi_st first")
        batch = collate_vision([c for g in groups for c in g.candidates], self.pad_id)
        batch.update(group_layout(groups))
        return batch


class VisionAPOTrainer(APOTrainer):
    """:class:`~distill.apo.trainer.APOTrainer` on image + text rows (one row per candidate;
    the loss, weights, metrics and logging are the text trainer's)."""

    def __init__(self, model: Any, args: Any, train_dataset: Any, processing_class: Any,
                 **kwargs: Any) -> None:
        if args.micro_batch_candidates:
            raise ValueError("micro_batch_candidates: not supported for vision students; "
                             "set 0 and lower per_device_train_batch_size instead")
        kwargs.setdefault("data_collator", VisionGroupCollator(processing_class.pad_token_id))
        super().__init__(model=model, args=args, train_dataset=train_dataset,
                         processing_class=processing_class, **kwargs)
        self.share_prompt = False

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        logps, n_tokens = vision_logps(model, inputs)
        loss, stats = self._loss_from_logps(logps, n_tokens, inputs)
        self._record(stats, inputs)
        return (loss, {"logps": logps}) if return_outputs else loss


def attach_vision_reference(groups: Sequence[VisionGroup], reference: Any, pad_id: int,
                            batch_size: int = 32, device: Any = None,
                            on_batch: Callable[[int, int], None] | None = None
                            ) -> list[VisionGroup]:
    """The frozen reference's log-prob of every candidate, once, carried with its group.

    ``on_batch(groups done, total)`` runs before the first and after each batch of about
    ``batch_size`` candidates (progress; it may raise to stop the round there).
    """
    from dataclasses import replace

    out: list[VisionGroup] = []
    if on_batch is not None and groups:
        on_batch(0, len(groups))
    start = 0
    while start < len(groups):
        end, rows = start, 0
        while end < len(groups) and (end == start or rows + len(groups[end].candidates)
                                     <= batch_size):
            rows += len(groups[end].candidates)
            end += 1
        chunk = groups[start:end]
        scores = vision_score_all(reference, [c for g in chunk for c in g.candidates], pad_id,
                                  batch_size, device)
        i = 0
        for g in chunk:
            out.append(replace(g, ref_logps=tuple(scores[i:i + len(g.candidates)])))
            i += len(g.candidates)
        start = end
        if on_batch is not None:
            on_batch(len(out), len(groups))
    return out
