"""Tiny vision-language students built offline, one per supported family, for tests and CPU
benchmarks: random weights, a BPE trained on the task text (:func:`distill.apo.tiny.
train_tokenizer`) with the special tokens the family's processor looks for, a tiny image
processor, and ``save_pretrained`` like any downloaded checkpoint, so the code path
(``AutoModelForImageTextToText`` + ``AutoProcessor``) is the one a real student takes.

Families (``TINY_VLM_FAMILIES``):

* ``llava``: a 2-layer CLIP vision tower and a 2-layer Qwen2 (the shape of LLaVA-style
  students); images squashed to ``image_size`` squared.
* ``idefics3``: Idefics3 (SmolVLM-256M/500M and Idefics3 checkpoints load as this class): a
  2-layer SigLIP-style encoder, pixel-shuffle connector, a 2-layer Llama; no image splitting.
* ``qwen2_vl`` / ``qwen2_5_vl``: Qwen2-VL and Qwen2.5-VL (3-D rope, ``image_grid_thw``,
  ``mm_token_type_ids``; 2.5: windowed vision attention). Without torchvision their
  processor is the image-only one of :mod:`distill.apo.vision_processors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.apo.vision import IMAGE_TOKEN, save_vision_student, vision_chat_template

TINY_VLM_FAMILIES = ("llava", "idefics3", "qwen2_vl", "qwen2_5_vl")


@dataclass(frozen=True)
class TinyVLMShape:
    """Sizes shared by the families: the language model's width and depth, the image side
    the processor resizes to and the vision patch side."""

    hidden_size: int = 64
    num_layers: int = 2
    image_size: int = 16
    patch_size: int = 4


def build_tiny_vlm(out_dir: Path, texts: Iterable[str], *, family: str = "llava",
                   hidden_size: int = 64, num_layers: int = 2, vocab_size: int = 400,
                   image_size: int = 16, patch_size: int = 4, seed: int = 0) -> Path:
    """A tiny ``family`` VLM (random weights) with its processor, saved to ``out_dir``."""
    import torch
    from transformers import AutoModelForImageTextToText

    from distill.apo.tiny import train_tokenizer

    if family not in _BUILDERS:
        raise ValueError(f"family: {family!r} is not one of {list(TINY_VLM_FAMILIES)}")
    tok = train_tokenizer(texts, vocab_size)
    shape = TinyVLMShape(hidden_size, num_layers, image_size, patch_size)
    processor, config = _BUILDERS[family](tok, shape)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return save_vision_student(model, processor, out_dir)


def _text_fields(tok: Any, shape: TinyVLMShape) -> dict[str, Any]:
    return dict(vocab_size=len(tok), hidden_size=shape.hidden_size,
                num_hidden_layers=shape.num_layers, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=2 * shape.hidden_size, max_position_embeddings=512,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                bos_token_id=None, tie_word_embeddings=True)


def _llava(tok: Any, shape: TinyVLMShape) -> tuple[Any, Any]:
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaProcessor, Qwen2Config
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    template = vision_chat_template(IMAGE_TOKEN)
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, "<|im_start|>",
                                                          "<|endoftext|>"]})
    tok.chat_template = template
    side, patch, hidden = shape.image_size, shape.patch_size, shape.hidden_size
    images = CLIPImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side},
        do_center_crop=False, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    images.size = {"height": side, "width": side}  # squash, keep both halves
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=patch,
                               vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=template)
    vision = CLIPVisionConfig(hidden_size=hidden // 2, intermediate_size=hidden,
                              num_hidden_layers=shape.num_layers, num_attention_heads=2,
                              image_size=side, patch_size=patch, projection_dim=hidden // 2)
    config = LlavaConfig(vision_config=vision, text_config=Qwen2Config(**_text_fields(tok, shape)),
                         image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                         image_seq_length=(side // patch) ** 2, vision_feature_layer=-1,
                         vision_feature_select_strategy="default", tie_word_embeddings=True)
    return processor, config


#: Idefics3's processor looks these up (image splitting's row/column tags included).
IDEFICS3_TOKENS = ("<fake_token_around_image>", IMAGE_TOKEN, "<end_of_utterance>",
                   "<global-img>", *(f"<row_{i}_col_{j}>" for i in range(1, 7)
                                     for j in range(1, 7)))


def _idefics3(tok: Any, shape: TinyVLMShape) -> tuple[Any, Any]:
    from transformers import Idefics3Config, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    template = vision_chat_template(IMAGE_TOKEN)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|endoftext|>",
                                                          *IDEFICS3_TOKENS]})
    tok.chat_template = template
    side, patch, scale = shape.image_size, shape.patch_size, 2
    images = Idefics3ImageProcessorPil(size={"longest_edge": side},
                                       max_image_size={"longest_edge": side},
                                       do_image_splitting=False, image_mean=[0.5] * 3,
                                       image_std=[0.5] * 3)
    processor = Idefics3Processor(image_processor=images, tokenizer=tok,
                                  image_seq_len=(side // patch) ** 2 // scale ** 2,
                                  chat_template=template)
    vision = dict(hidden_size=shape.hidden_size // 2, intermediate_size=shape.hidden_size,
                  num_hidden_layers=shape.num_layers, num_attention_heads=2, image_size=side,
                  patch_size=patch)
    config = Idefics3Config(  # type: ignore[call-arg]  # pad_token_id: taken by **kwargs
                            vision_config=vision,
                            text_config={"model_type": "llama", **_text_fields(tok, shape)},
                            image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                            scale_factor=scale, tie_word_embeddings=True,
                            pad_token_id=tok.pad_token_id)
    return processor, config


#: Qwen2-VL's image placeholder (the processor expands ``<|image_pad|>`` per image patch).
QWEN2_VL_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def _qwen_vl(tok: Any, shape: TinyVLMShape, family: str) -> tuple[Any, Any]:
    """Qwen2-VL or Qwen2.5-VL: same tokens, processor and 3-D rope; the 2.5 vision tower
    has windowed attention (one window here) and a gated MLP."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    template = vision_chat_template(QWEN2_VL_IMAGE)
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|endoftext|>",
                                                          *specials]})
    tok.chat_template = template
    side, patch, merge, hidden = shape.image_size, shape.patch_size, 2, shape.hidden_size
    images = Qwen2VLImageProcessorPil(size={"shortest_edge": side * side,
                                            "longest_edge": side * side},
                                      patch_size=patch, merge_size=merge,
                                      temporal_patch_size=2, image_mean=[0.5] * 3,
                                      image_std=[0.5] * 3)
    processor = _qwen_processor(family, images, tok, template)
    half = hidden // 4 // 2  # M-RoPE: temporal, height, width sections of head_dim / 2
    sections = [half - 2 * (half // 3), half // 3, half // 3]
    vision: dict[str, Any] = dict(depth=shape.num_layers, num_heads=2, patch_size=patch,
                                  spatial_merge_size=merge, temporal_patch_size=2)
    if family == "qwen2_vl":
        vision.update(embed_dim=hidden // 2, hidden_size=hidden, mlp_ratio=2)
    else:
        vision.update(hidden_size=hidden // 2, intermediate_size=hidden, out_hidden_size=hidden,
                      window_size=side * 2, fullatt_block_indexes=[shape.num_layers - 1])
    ids = tok.convert_tokens_to_ids
    config_class = Qwen2VLConfig if family == "qwen2_vl" else Qwen2_5_VLConfig
    config = config_class(
        vision_config=vision,
        text_config={**_text_fields(tok, shape),
                     "rope_parameters": {"rope_type": "default", "mrope_section": sections,
                                         "rope_theta": 10000.0}},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True)
    return processor, config


def _qwen_processor(family: str, images: Any, tok: Any, template: str) -> Any:
    """The stock processor (with its video processor) where torchvision is importable, else
    the image-only one (:mod:`distill.apo.vision_processors`); both save the same way."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor

    from distill.apo.vision_processors import IMAGE_ONLY, needs_image_only

    if needs_image_only(family):
        return IMAGE_ONLY[family](image_processor=images, tokenizer=tok, chat_template=template)
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    video = Qwen2VLVideoProcessor(patch_size=images.patch_size, merge_size=images.merge_size,
                                  temporal_patch_size=2)
    stock = Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor
    return stock(image_processor=images, tokenizer=tok, video_processor=video,
                 chat_template=template)


_BUILDERS: dict[str, Callable[[Any, TinyVLMShape], tuple[Any, Any]]] = {
    "llava": _llava, "idefics3": _idefics3,
    "qwen2_vl": lambda tok, shape: _qwen_vl(tok, shape, "qwen2_vl"),
    "qwen2_5_vl": lambda tok, shape: _qwen_vl(tok, shape, "qwen2_5_vl")}
