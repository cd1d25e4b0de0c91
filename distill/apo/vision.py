"""The vision-language student: any local Hugging Face image-text-to-text model directory
(``AutoModelForImageTextToText`` + ``AutoProcessor``: Qwen2-VL / Qwen2.5-VL, Idefics3 /
SmolVLM, LLaVA), trained with LoRA or fully, its vision tower frozen by default (the
method's reference setup trains the language side only).

* :func:`is_vision_student` tells a VLM directory from a causal-LM one by its config (a
  ``vision_config``), which is the switch :func:`distill.apo.student.load_student` uses.
* :func:`distill.apo.vision_tiny.build_tiny_vlm` makes a tiny LLaVA, Idefics3 or Qwen2-VL
  offline (random weights), saved like any downloaded checkpoint, for tests and benchmarks.
* :func:`load_group_images` opens a group's images by reference through
  :func:`stream.images.read_image_bytes` (roots confined, hash checked); a missing or
  changed image fails that group with a counted reason, never the whole run.

Inputs, scoring and the trainers are in :mod:`distill.apo.vision_encode`.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distill.groups import TeacherGroup
from stream.images import ImageUnavailable, read_image_bytes

IMAGE_TOKEN = "<image>"


def vision_chat_template(image_text: str) -> str:
    """ChatML whose user content may be a list of parts: an image part becomes
    ``image_text``, the placeholder the family's processor expands (the tiny students'
    template, extended for images)."""
    return (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        f"{{% if part['type'] == 'image' %}}{{{{ '{image_text}' }}}}"
        "{% else %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


#: The template of LLaVA-style processors (placeholder ``<image>``).
VISION_CHAT_TEMPLATE = vision_chat_template(IMAGE_TOKEN)
#: Parameter-name parts of the vision encoders of the supported families (LLaVA's
#: ``vision_tower``, Qwen2-VL's ``visual``, Idefics3 / SmolVLM's ``vision_model``).
VISION_TOWER_NAMES = ("vision_tower", "visual", "vision_model", "image_encoder")


def is_vision_student(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds an image-text-to-text model (its config has a vision part)."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        return False
    config = json.loads(path.read_text())
    return "vision_config" in config or "vision_tower" in config


def freeze_vision_tower(model: Any) -> int:
    """Stop gradients to the vision encoder; returns how many parameters were frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if any(part in name.split(".") for part in VISION_TOWER_NAMES):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def load_vision_student(model_dir: Path, *, device: Any = None, dtype: Any = None,
                        trainable: bool = False, freeze_vision: bool = True
                        ) -> tuple[Any, Any]:
    """(model, processor) from a local directory; the processor's tokenizer is left with a
    pad token. ``trainable`` keeps fp32 weights and freezes the vision tower unless told."""
    from transformers import AutoModelForImageTextToText

    from distill.apo.student import load_weights
    from distill.apo.vision_processors import load_processor

    model = load_weights(AutoModelForImageTextToText, model_dir, device, dtype, trainable)
    processor = load_processor(Path(model_dir))
    tok = processor.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(processor, "chat_template", None):
        processor.chat_template = VISION_CHAT_TEMPLATE
    if trainable and freeze_vision:
        freeze_vision_tower(model)
    return model, processor


def apply_vision_lora(model: Any, r: int = 8, alpha: int = 32, dropout: float = 0.0) -> Any:
    """LoRA on every linear layer of the language side; the vision tower gets no adapters."""
    from peft import LoraConfig, get_peft_model

    exclude = r".*\b(" + "|".join(VISION_TOWER_NAMES) + r")\b.*"
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules="all-linear", exclude_modules=exclude)
    return get_peft_model(model, config)


def save_vision_student(model: Any, processor: Any, out_dir: Path) -> Path:
    """``save_pretrained`` of the merged model and its processor: a plain VLM directory."""
    from distill.apo.student import unwrap

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unwrap(model).save_pretrained(str(out_dir), safe_serialization=True)
    processor.save_pretrained(str(out_dir))
    return out_dir


def open_image(data: bytes) -> Any:
    """Decoded RGB pixels of an image file's bytes (PIL)."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


ImagePrep = Callable[[TeacherGroup, list[Any]], list[Any]]


def load_group_images(groups: Sequence[TeacherGroup], roots: Sequence[str | Path],
                      prepare: ImagePrep | None = None,
                      ) -> tuple[list[tuple[TeacherGroup, list[Any]]], Counter[str]]:
    """Each group with its opened images, and the count of groups dropped per reason.

    A group without references gets no images; one whose image is missing, changed or
    outside the roots is dropped and counted under that reason (the other groups go on).
    ``prepare`` turns a group's opened images into what the student sees (e.g. one crop).
    """
    kept: list[tuple[TeacherGroup, list[Any]]] = []
    failed: Counter[str] = Counter()
    cache: dict[tuple[str, str], Any] = {}
    for group in groups:
        images: list[Any] = []
        for ref in group.images or ():
            key = (ref.uri, ref.sha256)
            if key not in cache:
                data = read_image_bytes(ref, roots)
                cache[key] = data if isinstance(data, ImageUnavailable) else open_image(data)
            images.append(cache[key])
        bad = next((i for i in images if isinstance(i, ImageUnavailable)), None)
        if bad is not None:
            failed[bad.reason] += 1
            continue
        kept.append((group, prepare(group, images) if prepare else images))
    return kept, failed
