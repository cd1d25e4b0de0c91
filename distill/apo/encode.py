"""Tokenising (prompt, response) pairs and scoring responses: the one place that decides
which tokens count as "the response" for SFT, the APO rewards and the evaluation.

Sequences are LEFT-padded, so every response ends at the last position of the batch; the
model is then asked only for the logits of the last ``max response length + 1`` positions
(``logits_to_keep``), which skips the prompt's share of the vocabulary projection.
Position ids are passed explicitly so padding does not shift them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Encoded:
    """Token ids of one prompt + response; ``prompt_len`` tokens belong to the prompt."""

    input_ids: list[int]
    prompt_len: int

    @property
    def response_len(self) -> int:
        return len(self.input_ids) - self.prompt_len


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The chat-templated user turn plus the assistant header."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    ids: list[int] = tokenizer(text, add_special_tokens=False).input_ids
    return ids


def encode_pair(tokenizer: Any, prompt: str, response: str, max_length: int,
                max_prompt_length: int | None = None) -> Encoded:
    """Prompt keeps its END (left-truncated), response its START; the response gets an EOS.

    At least one response token always survives, so every candidate has a score.
    """
    p_ids = prompt_ids(tokenizer, prompt)
    r_ids = [*tokenizer(response, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    budget_prompt = min(max_prompt_length or max_length, max_length - 1)
    p_ids = p_ids[-budget_prompt:] if len(p_ids) > budget_prompt else p_ids
    r_ids = r_ids[: max(1, max_length - len(p_ids))]
    return Encoded(p_ids + r_ids, len(p_ids))


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, Any]:
    """Left-pad into tensors: input_ids, attention_mask, position_ids, response_mask."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    resp = torch.zeros((len(batch), width), dtype=torch.bool)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, width - n:] = torch.tensor(e.input_ids, dtype=torch.long)
        attn[i, width - n:] = 1
        resp[i, width - e.response_len:] = True
    pos = (attn.cumsum(1) - 1).clamp_min(0)
    return {"input_ids": ids, "attention_mask": attn, "position_ids": pos,
            "response_mask": resp}


def sequence_logps(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Summed response log-probs per row, and the response token counts.

    Works on a plain model and on a PEFT-wrapped one; gradients flow when enabled.
    """
    import torch

    resp = batch["response_mask"]
    keep = int(resp.sum(1).max().item()) + 1
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, :-1].float()  # position t predicts token t+1
    targets = batch["input_ids"][:, -keep + 1:]
    mask = resp[:, -keep + 1:]
    token_logps = -torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), targets, reduction="none")
    return (token_logps * mask).sum(1), mask.sum(1)


def score_all(model: Any, encoded: Sequence[Encoded], pad_id: int, batch_size: int = 16,
              device: Any = None) -> list[float]:
    """Summed response log-probs of many sequences, without gradients (reference, eval)."""
    import torch

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    scores = [0.0] * len(encoded)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = collate([encoded[i] for i in idx], pad_id)
            if device is not None:
                batch = {k: v.to(device) for k, v in batch.items()}
            logps, _ = sequence_logps(model, batch)
            for i, v in zip(idx, logps.tolist(), strict=True):
                scores[i] = v
    model.train(was_training)
    return scores


@functools.cache
def _cache_keyword() -> str:
    """Transformers renamed ``past_key_values`` to ``cache`` (5.2x); accept both."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else \
        "past_key_values"


def collate_shared(groups: Sequence[Sequence[Encoded]], pad_id: int) -> dict[str, Any]:
    """Prompt once per group, responses apart: the layout of :func:`shared_prompt_logps`.

    Returns ``prompt_ids``/``prompt_mask`` ``[G, P]`` (left-padded), ``resp_ids``/
    ``resp_mask`` ``[M, R]`` (right-padded) and ``resp_group [M]`` (each row's group).
    All candidates of a group must share their prompt tokens (they do: same prompt, same
    truncation).
    """
    import torch

    prompts = [g[0].input_ids[: g[0].prompt_len] for g in groups]
    for g, p in zip(groups, prompts, strict=True):
        if any(e.input_ids[: e.prompt_len] != p for e in g):
            raise ValueError("candidates of one group must share the prompt tokens")
    responses = [e.input_ids[e.prompt_len:] for g in groups for e in g]
    p_width, r_width = max(map(len, prompts)), max(map(len, responses))
    p_ids = torch.full((len(prompts), p_width), pad_id, dtype=torch.long)
    p_mask = torch.zeros((len(prompts), p_width), dtype=torch.long)
    for i, p in enumerate(prompts):
        p_ids[i, p_width - len(p):] = torch.tensor(p, dtype=torch.long)
        p_mask[i, p_width - len(p):] = 1
    r_ids = torch.full((len(responses), r_width), pad_id, dtype=torch.long)
    r_mask = torch.zeros((len(responses), r_width), dtype=torch.bool)
    for i, r in enumerate(responses):
        r_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        r_mask[i, : len(r)] = True
    group_of = torch.tensor([gi for gi, g in enumerate(groups) for _ in g], dtype=torch.long)
    return {"prompt_ids": p_ids, "prompt_mask": p_mask, "resp_ids": r_ids, "resp_mask": r_mask,
            "resp_group": group_of}


def shared_prompt_logps(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Like :func:`sequence_logps`, but each group's prompt goes through the model ONCE.

    The prompt's key/value cache (with its autograd graph) is copied to every candidate
    of the group, and only the responses are run on top of it; gradients reach the prompt
    positions through the cache. Needs a model with a KV cache and no gradient
    checkpointing (which disables the cache while training).
    """
    import torch

    kw = _cache_keyword()
    p_mask, r_mask, group_of = batch["prompt_mask"], batch["resp_mask"], batch["resp_group"]
    p_pos = (p_mask.cumsum(1) - 1).clamp_min(0)
    first = model(input_ids=batch["prompt_ids"], attention_mask=p_mask, position_ids=p_pos,
                  use_cache=True, logits_to_keep=1)
    cache = first[kw]
    cache.batch_select_indices(group_of)
    p_len = p_mask.sum(1)[group_of]
    r_pos = p_len.unsqueeze(1) + torch.arange(r_mask.shape[1], device=r_mask.device)
    attn = torch.cat([p_mask[group_of], r_mask.long()], dim=1)
    out = model(input_ids=batch["resp_ids"], attention_mask=attn, position_ids=r_pos,
                use_cache=True, **{kw: cache})
    logits = torch.cat([first.logits[group_of, -1:].float(), out.logits[:, :-1].float()], 1)
    token_logps = -torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), batch["resp_ids"], reduction="none")
    return (token_logps * r_mask).sum(1), r_mask.sum(1)
