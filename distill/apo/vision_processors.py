"""The student's processor, also where transformers cannot build the stock one.

Qwen2-VL's and Qwen2.5-VL's processors hold a video processor, and transformers builds
video processors only with ``torchvision`` importable; students here only ever see images.
Without torchvision, such a directory loads with :class:`ImageOnlyQwen2VLProcessor` (or the
2.5 one): the stock class minus its video half, saved under the stock class's name so a
machine with torchvision loads the same directory with the stock processor. Hand-written
(a dozen lines over the stock class) because no library offers an image-only variant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import ProcessorMixin, Qwen2_5_VLProcessor, Qwen2VLProcessor
from transformers.utils.import_utils import is_torchvision_available


def _image_token_attrs(self: Any, tokenizer: Any) -> None:
    """What the stock ``__init__`` sets before its video processor is checked."""
    self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
    self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
    self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
    self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without the video processor (module docstring)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None,
                 chat_template: str | None = None, **kwargs: Any) -> None:
        _image_token_attrs(self, tokenizer)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "processor_class": Qwen2VLProcessor.__name__}


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without the video processor (module docstring)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None,
                 chat_template: str | None = None, **kwargs: Any) -> None:
        _image_token_attrs(self, tokenizer)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "processor_class": Qwen2_5_VLProcessor.__name__}


#: model_type -> the image-only processor used when torchvision is missing.
IMAGE_ONLY = {"qwen2_vl": ImageOnlyQwen2VLProcessor, "qwen2_5_vl": ImageOnlyQwen2_5_VLProcessor}


def needs_image_only(model_type: str) -> bool:
    """Whether ``model_type``'s stock processor cannot be built here (no torchvision)."""
    return model_type in IMAGE_ONLY and not is_torchvision_available()


def load_processor(model_dir: Path) -> Any:
    """``AutoProcessor.from_pretrained``, or the image-only one where that cannot work."""
    from transformers import AutoProcessor

    model_type = json.loads((Path(model_dir) / "config.json").read_text()).get("model_type", "")
    if needs_image_only(model_type):
        return IMAGE_ONLY[model_type].from_pretrained(str(model_dir))
    return AutoProcessor.from_pretrained(str(model_dir))
