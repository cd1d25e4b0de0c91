r"""APO losses on per-candidate log-ratios: pure torch, no model, no trainer.

A preference group is one positive (the consensus trajectory) and N negatives (the raw
teacher trajectories). The inputs are summed response log-probs of the policy and of the
frozen reference ``pi_st``; the reward of a candidate is

.. math:: r = \beta\,(\log\pi_\theta(t\mid x) - \log\pi_{st}(t\mid x)).

``apo`` (the paper's Plackett-Luce top-1 likelihood, with per-negative weights):

.. math:: L = \log\Big(1 + \sum_u w_u \exp(r_u - r_+)\Big)

which for uniform ``w_u = 1`` is ``logsumexp([r+, r_1..N]) - r+`` (DESIGN.md), and for N = 1
is DPO's ``-log sigmoid(r+ - r_1)``. ``dpo_pairwise`` (the authors' released script) is the
mean over the group's pairs of ``-log sigmoid(r+ - r_u)``, each pair scaled by ``w_u``.

Weights of 0 (or padding, ``mask`` False) remove a negative exactly: its log-prob gets no
gradient.

Examples
--------
>>> import torch
>>> pos, neg = torch.tensor([1.0]), torch.tensor([[0.0]])
>>> zero = torch.zeros(1)
>>> apo = plackett_luce_loss(pos, zero, neg, torch.zeros(1, 1), torch.ones(1, 1), beta=0.1)
>>> dpo = -torch.nn.functional.logsigmoid(torch.tensor(0.1))
>>> bool(torch.isclose(apo, dpo))
True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _margins(pos_logps: Tensor, pos_ref: Tensor, neg_logps: Tensor, neg_ref: Tensor,
             beta: float) -> tuple[Tensor, Tensor]:
    return beta * (pos_logps - pos_ref), beta * (neg_logps - neg_ref)


def plackett_luce_loss(pos_logps: Tensor, pos_ref: Tensor, neg_logps: Tensor, neg_ref: Tensor,
                       weights: Tensor, beta: float = 0.1, mask: Tensor | None = None) -> Tensor:
    """Per-group weighted PL loss ``log(1 + sum_u w_u exp(r_u - r+))``, shape ``[G]``.

    ``pos_*`` are ``[G]``; ``neg_*``, ``weights`` and ``mask`` are ``[G, N]``.
    """
    r_pos, r_neg = _margins(pos_logps, pos_ref, neg_logps, neg_ref, beta)
    keep = weights > 0 if mask is None else (weights > 0) & mask
    log_w = torch.log(weights.clamp_min(torch.finfo(weights.dtype).tiny))
    terms = torch.where(keep, log_w + r_neg - r_pos.unsqueeze(1),
                        torch.full_like(r_neg, float("-inf")))
    one = torch.zeros_like(r_pos).unsqueeze(1)  # the "1 +" term: exp(0)
    return torch.logsumexp(torch.cat([one, terms], dim=1), dim=1)


def pairwise_dpo_loss(pos_logps: Tensor, pos_ref: Tensor, neg_logps: Tensor, neg_ref: Tensor,
                      weights: Tensor, beta: float = 0.1, mask: Tensor | None = None) -> Tensor:
    """Per-group mean over valid pairs of ``w_u * -log sigmoid(r+ - r_u)``, shape ``[G]``."""
    r_pos, r_neg = _margins(pos_logps, pos_ref, neg_logps, neg_ref, beta)
    valid = torch.ones_like(weights, dtype=torch.bool) if mask is None else mask
    per_pair = -F.logsigmoid(r_pos.unsqueeze(1) - r_neg)
    per_pair = torch.where(valid & (weights > 0), weights * per_pair, torch.zeros_like(per_pair))
    return per_pair.sum(1) / valid.sum(1).clamp_min(1)


LossFn = Callable[..., Tensor]
LOSSES: dict[str, LossFn] = {"apo": plackett_luce_loss, "dpo_pairwise": pairwise_dpo_loss}


def group_loss(name: str, pos_logps: Tensor, pos_ref: Tensor, neg_logps: Tensor, neg_ref: Tensor,
               weights: Tensor, beta: float, mask: Tensor | None = None) -> Tensor:
    """Dispatch by name; the config has already checked the name against :data:`LOSSES`."""
    try:
        fn = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss_type {name!r}; valid: {sorted(LOSSES)}") from None
    return fn(pos_logps, pos_ref, neg_logps, neg_ref, weights, beta=beta, mask=mask)


def reward_stats(pos_logps: Tensor, pos_ref: Tensor, neg_logps: Tensor, neg_ref: Tensor,
                 beta: float, mask: Tensor) -> dict[str, float]:
    """TRL-style metrics: rewards/chosen, rewards/rejected, rewards/margins (r+ - max r_u),
    rewards/accuracies (share of groups whose positive beats every negative)."""
    with torch.no_grad():
        r_pos, r_neg = _margins(pos_logps, pos_ref, neg_logps, neg_ref, beta)
        masked = torch.where(mask, r_neg, torch.full_like(r_neg, float("-inf")))
        best_neg = masked.max(1).values
        has_neg = mask.any(1)
        margin = torch.where(has_neg, r_pos - best_neg, torch.zeros_like(r_pos))
        n_neg = mask.sum().clamp_min(1)
        return {
            "rewards/chosen": r_pos.mean().item(),
            "rewards/rejected": (torch.where(mask, r_neg, 0.0).sum() / n_neg).item(),
            "rewards/margins": margin.mean().item(),
            "rewards/accuracies": (margin > 0).float().mean().item(),
            "logps/chosen": pos_logps.mean().item(),
            "logps/rejected": (torch.where(mask, neg_logps, 0.0).sum() / n_neg).item(),
        }
