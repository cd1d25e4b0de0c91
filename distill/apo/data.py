"""Tokenised preference groups with their reference log-probs cached, and their collator.

The frozen reference ``pi_st`` scores every candidate exactly once, before training
(:func:`attach_reference`), and the numbers travel with the group; the reference model
can then be freed, so a round holds one model in memory while it trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from distill.apo.encode import Encoded, collate, encode_pair, score_all
from distill.apo.preference import PreferenceGroup


@dataclass(frozen=True, slots=True)
class EncodedGroup:
    """Candidates of one group, positive first; ``ref_logps`` is None until attached."""

    sample_id: str
    candidates: tuple[Encoded, ...]
    weights: tuple[float, ...]  # one per negative
    ref_logps: tuple[float, ...] | None = None


def encode_groups(groups: Sequence[PreferenceGroup], tokenizer: Any, max_length: int,
                  max_prompt_length: int) -> list[EncodedGroup]:
    """Every candidate is scored on the plain prompt (no teachers in context)."""
    out = []
    for g in groups:
        texts = (g.positive, *g.negatives)
        cands = tuple(encode_pair(tokenizer, g.prompt, t, max_length, max_prompt_length)
                      for t in texts)
        out.append(EncodedGroup(g.sample_id, cands, tuple(g.weights)))
    return out


def attach_reference(groups: Sequence[EncodedGroup], reference: Any, pad_id: int,
                     batch_size: int = 16, device: Any = None) -> list[EncodedGroup]:
    """One no-grad pass of the reference over every candidate; results cached per group."""
    flat = [c for g in groups for c in g.candidates]
    scores = score_all(reference, flat, pad_id, batch_size=batch_size, device=device)
    out, i = [], 0
    for g in groups:
        n = len(g.candidates)
        out.append(replace(g, ref_logps=tuple(scores[i:i + n])))
        i += n
    return out


class GroupCollator:
    """Pads all candidates of a batch of groups into one left-padded tensor batch.

    Besides the model inputs it returns ``group_index [G, K]`` (rows of the positive, then
    the negatives; -1 pads groups with fewer teachers), ``weights`` and ``neg_mask``
    ``[G, K-1]`` and the cached ``ref_logps [M]``.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, groups: Sequence[EncodedGroup]) -> dict[str, Any]:
        import torch

        if any(g.ref_logps is None for g in groups):
            raise ValueError("reference log-probs missing: call attach_reference first")
        width = max(len(g.candidates) for g in groups)
        index = torch.full((len(groups), width), -1, dtype=torch.long)
        weights = torch.zeros((len(groups), width - 1))
        flat: list[Encoded] = []
        refs: list[float] = []
        for gi, g in enumerate(groups):
            n = len(g.candidates)
            index[gi, :n] = torch.arange(len(flat), len(flat) + n)
            weights[gi, :n - 1] = torch.tensor(g.weights, dtype=torch.float32)
            flat.extend(g.candidates)
            refs.extend(g.ref_logps or ())
        batch = collate(flat, self.pad_id)
        batch.update(group_index=index, weights=weights, neg_mask=index[:, 1:] >= 0,
                     ref_logps=torch.tensor(refs, dtype=torch.float32))
        return batch
