"""Tokenising (prompt, response) pairs and scoring responses: the one place that decides
which tokens count as "the response" for SFT, the APO rewards and the evaluation.

Sequences are LEFT-padded, so every response ends at the last position of the batch; the
model is then asked only for the logits of the last ``max response length + 1`` positions
(``logits_to_keep``), which skips the prompt's share of the vocabulary projection.
Position ids are passed explicitly so padding does not shift them.
"""

from __future__ import annotations

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
    return tokenizer(text, add_special_tokens=False).input_ids


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
