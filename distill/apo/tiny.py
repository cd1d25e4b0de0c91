"""Tiny real students built offline: a small Qwen2 or Llama config plus a BPE tokenizer
trained with ``tokenizers`` on the task's own text, saved as a normal Hugging Face model dir.

Tests, the demo and the benchmarks use these instead of downloading a checkpoint: the
code path (``AutoModelForCausalLM`` + chat template + ``save_pretrained``) is the same one a
real student takes. ``TinySpec.smollm2_shape()`` gives a randomly initialised model with
SmolLM2-135M's shape, for timing on a GPU when the real weights cannot travel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny causal LM. The defaults give about 0.1M parameters."""

    arch: Literal["qwen2", "llama"] = "qwen2"
    vocab_size: int = 384
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True
    model_vocab_size: int | None = None  # embedding rows; None = the tokenizer's size

    @classmethod
    def smollm2_shape(cls) -> TinySpec:
        """SmolLM2-135M's architecture (Llama, 30 layers, 576 wide, 49152-row vocab)."""
        return cls(arch="llama", vocab_size=4096, hidden_size=576, num_layers=30, num_heads=9,
                   num_kv_heads=3, intermediate_size=1536, max_position_embeddings=2048,
                   model_vocab_size=49152)

    def scaled(self, **changes: Any) -> TinySpec:  # field name -> value, as replace takes
        return replace(self, **changes)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts``, wrapped as a fast tokenizer with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>", pad_token="<|pad|>",
        unk_token=None, additional_special_tokens=["<|im_start|>", "<|endoftext|>"])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(spec: TinySpec, vocab_size: int, pad_id: int, eos_id: int,
                seed: int = 0) -> PreTrainedModel:
    """A randomly initialised ``Qwen2ForCausalLM`` / ``LlamaForCausalLM`` of the given shape."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cls = Qwen2Config if spec.arch == "qwen2" else LlamaConfig
    config = cls(
        vocab_size=spec.model_vocab_size or vocab_size, hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings, pad_token_id=pad_id, eos_token_id=eos_id,
        bos_token_id=None)
    torch.manual_seed(seed)
    model: PreTrainedModel = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model


def build_tiny_student(out_dir: Path, texts: Iterable[str], spec: TinySpec | None = None,
                       seed: int = 0) -> Path:
    """Train a tokenizer on ``texts``, build the model, ``save_pretrained`` both to ``out_dir``.

    Parameters
    ----------
    out_dir
        Created if missing; afterwards it loads with ``AutoModelForCausalLM`` and
        ``AutoTokenizer`` like any downloaded checkpoint.
    texts
        Prompts and trajectories of the task, so the BPE merges fit its vocabulary.
    spec
        Model shape; :class:`TinySpec` defaults when None.
    """
    spec = spec or TinySpec()
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    model = build_model(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id,
                        seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "tiny_spec.json").write_text(__import__("json").dumps(asdict(spec)))
    return out_dir
