"""Tokenised preference groups with their reference log-probs cached, and their collator.

The frozen reference ``pi_st`` scores every candidate exactly once, before training
(:func:`attach_reference`), and the numbers travel with the group; the reference model
can then be freed, so a round holds one model in memory while it trains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from distill.apo.encode import (
    Encoded,
    collate,
    collate_shared,
    encode_pair,
    shared_prompt_logps,
)
from distill.apo.preference import PreferenceGroup
from distill.apo.refcache import ReferenceCache, candidate_key


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
                     batch_size: int = 16, device: Any = None,
                     cache: ReferenceCache | None = None,
                     on_batch: Callable[[int, int], None] | None = None) -> list[EncodedGroup]:
    """One no-grad pass of the reference over every candidate; results cached per group.

    Groups are scored a few at a time (about ``batch_size`` candidates), each prompt once.
    With a :class:`~distill.apo.refcache.ReferenceCache`, groups whose candidates are all
    known skip the pass, and new results are stored for later rounds.
    """
    keys = [[candidate_key(c.input_ids, c.prompt_len) for c in g.candidates] for g in groups]
    known = cache.get_many(k for ks in keys for k in ks) if cache is not None else {}
    todo = [g for g, ks in zip(groups, keys, strict=True) if not all(k in known for k in ks)]
    fresh: dict[str, float] = {}
    for g in _score(todo, reference, pad_id, batch_size, device, on_batch):
        fresh.update(zip((candidate_key(c.input_ids, c.prompt_len) for c in g.candidates),
                         g.ref_logps or (), strict=True))
    if cache is not None:
        cache.hits += sum(len(g.candidates) for g in groups) - sum(len(g.candidates)
                                                                  for g in todo)
        if fresh:
            cache.put_many(fresh)
    values = {**known, **fresh}
    return [replace(g, ref_logps=tuple(values[k] for k in ks))
            for g, ks in zip(groups, keys, strict=True)]


def _score(groups: Sequence[EncodedGroup], reference: Any, pad_id: int, batch_size: int,
           device: Any, on_batch: Callable[[int, int], None] | None = None
           ) -> list[EncodedGroup]:
    import torch

    out: list[EncodedGroup] = []
    was_training = reference.training
    reference.eval()
    if on_batch is not None and groups:
        on_batch(0, len(groups))
    with torch.no_grad():
        for chunk in _chunks(groups, batch_size):
            batch = collate_shared([g.candidates for g in chunk], pad_id)
            if device is not None:
                batch = {k: v.to(device) for k, v in batch.items()}
            scores = shared_prompt_logps(reference, batch)[0].tolist()
            i = 0
            for g in chunk:
                out.append(replace(g, ref_logps=tuple(scores[i:i + len(g.candidates)])))
                i += len(g.candidates)
            if on_batch is not None:
                on_batch(len(out), len(groups))
    reference.train(was_training)
    return out


def _chunks(groups: Sequence[EncodedGroup], size: int) -> list[list[EncodedGroup]]:
    chunks: list[list[EncodedGroup]] = [[]]
    for g in groups:
        if chunks[-1] and sum(len(x.candidates) for x in chunks[-1]) + len(g.candidates) > size:
            chunks.append([])
        chunks[-1].append(g)
    return [c for c in chunks if c]


class GroupCollator:
    """Pads all candidates of a batch of groups into one left-padded tensor batch.

    Besides the model inputs it returns ``group_index [G, K]`` (rows of the positive, then
    the negatives; -1 pads groups with fewer teachers), ``weights`` and ``neg_mask``
    ``[G, K-1]`` and the cached ``ref_logps [M]``. With ``share_prompt`` the model inputs
    are in the layout of :func:`~distill.apo.encode.collate_shared` (each prompt once).
    """

    def __init__(self, pad_id: int, share_prompt: bool = False) -> None:
        self.pad_id = pad_id
        self.share_prompt = share_prompt

    def __call__(self, groups: Sequence[EncodedGroup]) -> dict[str, Any]:
        if any(g.ref_logps is None for g in groups):
            raise ValueError("reference log-probs missing: call attach_reference first")
        flat = [c for g in groups for c in g.candidates]
        if self.share_prompt:
            batch = collate_shared([g.candidates for g in groups], self.pad_id)
        else:
            batch = collate(flat, self.pad_id)
        batch.update(group_layout(groups))
        return batch


def group_layout(groups: Sequence[Any]) -> dict[str, Any]:
    """The APO loss's view of a batch whose candidates are rows in group order: each
    group's row indices (-1 pads), its negatives' weights and mask, the reference log-probs.
    Shared by the text and the vision collators."""
    import torch

    width = max(len(g.candidates) for g in groups)
    index = torch.full((len(groups), width), -1, dtype=torch.long)
    weights = torch.zeros((len(groups), width - 1))
    refs: list[float] = []
    row = 0
    for gi, g in enumerate(groups):
        n = len(g.candidates)
        index[gi, :n] = torch.arange(row, row + n)
        weights[gi, :n - 1] = torch.tensor(g.weights, dtype=torch.float32)
        refs.extend(g.ref_logps or ())
        row += n
    return {"group_index": index, "weights": weights, "neg_mask": index[:, 1:] >= 0,
            "ref_logps": torch.tensor(refs, dtype=torch.float32)}
