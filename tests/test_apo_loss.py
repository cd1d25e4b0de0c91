"""The APO losses on hand-computed log-probs: the formulas, the weights' effect on gradients."""

from __future__ import annotations

import math

import pytest
import torch

from distill.apo.loss import (
    group_loss,
    pairwise_dpo_loss,
    plackett_luce_loss,
    reward_stats,
)

pytestmark = pytest.mark.train


def _leaf(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def test_plackett_luce_equals_dpo_for_one_negative() -> None:
    gen = torch.Generator().manual_seed(0)
    pos, pos_ref = torch.randn(16, generator=gen) * 5, torch.randn(16, generator=gen) * 5
    neg, neg_ref = torch.randn(16, 1, generator=gen) * 5, torch.randn(16, 1, generator=gen) * 5
    apo = plackett_luce_loss(pos, pos_ref, neg, neg_ref, torch.ones(16, 1), beta=0.1)
    dpo = -torch.nn.functional.logsigmoid(0.1 * ((pos - pos_ref) - (neg - neg_ref)[:, 0]))
    torch.testing.assert_close(apo, dpo)
    pair = pairwise_dpo_loss(pos, pos_ref, neg, neg_ref, torch.ones(16, 1), beta=0.1)
    torch.testing.assert_close(pair, dpo)


def test_plackett_luce_matches_design_formula_on_hand_computed_logps() -> None:
    # r+ = 0.1 * (-10 - -12) = 0.2; r_1 = 0.1 * (-11 - -11) = 0; r_2 = 0.1 * (-9 - -10) = 0.1
    loss = plackett_luce_loss(torch.tensor([-10.0]), torch.tensor([-12.0]),
                              torch.tensor([[-11.0, -9.0]]), torch.tensor([[-11.0, -10.0]]),
                              torch.ones(1, 2), beta=0.1)
    lse = math.log(math.exp(0.2) + math.exp(0.0) + math.exp(0.1))
    assert loss.item() == pytest.approx(lse - 0.2, abs=1e-6)
    assert loss.item() == pytest.approx(
        -math.log(math.exp(0.2) / (math.exp(0.2) + math.exp(0.0) + math.exp(0.1))), abs=1e-6)


def test_weighted_plackett_luce_matches_its_formula() -> None:
    w = [0.5, 3.0]
    loss = plackett_luce_loss(torch.tensor([-10.0]), torch.tensor([-12.0]),
                              torch.tensor([[-11.0, -9.0]]), torch.tensor([[-11.0, -10.0]]),
                              torch.tensor([w]), beta=0.1)
    expected = math.log(1 + w[0] * math.exp(0.0 - 0.2) + w[1] * math.exp(0.1 - 0.2))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_zero_weight_negative_gets_exactly_zero_gradient() -> None:
    neg = _leaf([[-11.0, -9.0, -8.0]])
    loss = plackett_luce_loss(_leaf([-10.0]), torch.tensor([-12.0], dtype=torch.float64), neg,
                              torch.full((1, 3), -10.0, dtype=torch.float64),
                              torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64))
    loss.sum().backward()
    assert neg.grad[0, 1].item() == 0.0
    assert neg.grad[0, 0].item() > 0 and neg.grad[0, 2].item() > 0


def test_larger_weight_gives_that_negative_a_larger_gradient() -> None:
    grads = []
    for w in (1.0, 4.0):
        neg = _leaf([[-11.0, -11.0]])
        loss = plackett_luce_loss(_leaf([-10.0]), torch.tensor([-10.0], dtype=torch.float64),
                                  neg, torch.full((1, 2), -11.0, dtype=torch.float64),
                                  torch.tensor([[1.0, w]], dtype=torch.float64))
        loss.sum().backward()
        grads.append(neg.grad[0].clone())
    assert grads[1][1] > 1.5 * grads[0][1]  # weighted negative is pushed down harder
    assert grads[1][1] > grads[1][0]  # and harder than its unweighted sibling


def test_padded_negative_is_ignored_like_a_missing_teacher() -> None:
    args = (torch.tensor([-10.0]), torch.tensor([-12.0]))
    full = plackett_luce_loss(*args, torch.tensor([[-11.0]]), torch.tensor([[-11.0]]),
                              torch.ones(1, 1))
    padded = plackett_luce_loss(*args, torch.tensor([[-11.0, 123.0]]),
                                torch.tensor([[-11.0, 0.0]]), torch.ones(1, 2),
                                mask=torch.tensor([[True, False]]))
    torch.testing.assert_close(full, padded)
    dpo_padded = pairwise_dpo_loss(*args, torch.tensor([[-11.0, 123.0]]),
                                   torch.tensor([[-11.0, 0.0]]), torch.ones(1, 2),
                                   mask=torch.tensor([[True, False]]))
    dpo_full = pairwise_dpo_loss(*args, torch.tensor([[-11.0]]), torch.tensor([[-11.0]]),
                                 torch.ones(1, 1))
    torch.testing.assert_close(dpo_padded, dpo_full)


def test_pairwise_dpo_is_the_mean_over_the_groups_pairs() -> None:
    pos, pos_ref = torch.tensor([-10.0]), torch.tensor([-12.0])
    neg, neg_ref = torch.tensor([[-11.0, -9.0, -14.0]]), torch.tensor([[-11.0, -10.0, -13.0]])
    loss = pairwise_dpo_loss(pos, pos_ref, neg, neg_ref, torch.ones(1, 3), beta=0.1)
    pairs = [-math.log(1 / (1 + math.exp(-(0.2 - r)))) for r in (0.0, 0.1, -0.1)]
    assert loss.item() == pytest.approx(sum(pairs) / 3, abs=1e-6)


def test_group_loss_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown loss_type 'ipo'"):
        group_loss("ipo", *(torch.zeros(1),) * 2, *(torch.zeros(1, 1),) * 3, beta=0.1)


def test_reward_margin_is_positive_minus_best_negative() -> None:
    stats = reward_stats(torch.tensor([-10.0]), torch.tensor([-12.0]),
                         torch.tensor([[-11.0, -9.0]]), torch.tensor([[-11.0, -10.0]]),
                         beta=0.1, mask=torch.tensor([[True, True]]))
    assert stats["rewards/margins"] == pytest.approx(0.2 - 0.1)
    assert stats["rewards/accuracies"] == 1.0
