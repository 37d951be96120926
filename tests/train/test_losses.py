"""Every loss against arithmetic written out by hand with math.log / math.exp."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

from rlhfkit.errors import InputError
from rlhfkit.train import losses
from rlhfkit.train.losses import (
    bradley_terry_loss,
    dpo_loss,
    grpo_advantages,
    kto_balanced_weights,
    kto_loss,
    ppo_policy_loss,
    ppo_value_loss,
    rloo_advantages,
    sft_loss,
)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_docstring_examples_hold():
    assert doctest.testmod(losses).failed == 0


# ---------------------------------------------------------------- Bradley-Terry


def test_bradley_terry_by_hand():
    loss, acc = bradley_terry_loss(t(2.0, 0.0), t(1.0, 3.0))
    # -log sigmoid(1) and -log sigmoid(-3), averaged; one of two pairs ranked right.
    expected = (-math.log(sigmoid(1.0)) - math.log(sigmoid(-3.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc.item() == 0.5


def test_bradley_terry_margin_is_subtracted():
    loss, acc = bradley_terry_loss(t(2.0), t(1.0), margin=t(0.5))
    assert loss.item() == pytest.approx(-math.log(sigmoid(0.5)), rel=1e-6)
    assert acc.item() == 1.0  # accuracy compares raw scores, not score minus margin


def test_bradley_terry_multi_head_uses_judged_heads_only():
    chosen = torch.tensor([[1.0, 5.0], [0.0, 2.0]])  # (batch, heads)
    rejected = torch.tensor([[0.0, 9.0], [1.0, 0.0]])
    judged = torch.tensor([[True, False], [True, True]])
    margin = t(0.0, 1.0)  # one per pair, shared by its heads
    loss, acc = bradley_terry_loss(chosen, rejected, margin=margin, head_mask=judged)
    # judged diffs minus margin: pair 0 head 0: 1 - 0; pair 1: (-1 - 1), (2 - 1)
    expected = -(math.log(sigmoid(1.0)) + math.log(sigmoid(-2.0)) + math.log(sigmoid(1.0))) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc.item() == pytest.approx(2 / 3)


def test_bradley_terry_gradient_pushes_chosen_up():
    chosen = t(0.0).requires_grad_()
    loss, _ = bradley_terry_loss(chosen, t(0.0))
    loss.backward()
    assert chosen.grad.item() == pytest.approx(-0.5)  # d/dx -log sigmoid(x) at 0 = -(1 - 0.5)


# ---------------------------------------------------------------- DPO / IPO


def test_dpo_sigmoid_by_hand():
    # policy margin (-1) - (-3) = 2, reference margin (-2) - (-2) = 0, so h = 2; beta = 0.5
    out, chosen_r, rejected_r = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5)
    assert out.item() == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-6)
    assert chosen_r.item() == pytest.approx(0.5 * (-1.0 + 2.0))
    assert rejected_r.item() == pytest.approx(0.5 * (-3.0 + 2.0))


def test_dpo_label_smoothing_by_hand():
    out, _, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5, label_smoothing=0.1)
    expected = 0.9 * -math.log(sigmoid(1.0)) + 0.1 * -math.log(sigmoid(-1.0))
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_ipo_by_hand():
    # h = 2, beta = 0.5: (2 - 1 / (2 * 0.5)) ** 2 = 1
    out, _, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5, loss_type="ipo")
    assert out.item() == pytest.approx(1.0)
    out, _, _ = dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), beta=0.1, loss_type="ipo")
    assert out.item() == pytest.approx(25.0, rel=1e-5)  # (0 - 5) ** 2


def test_dpo_rewards_are_detached():
    policy = t(-1.0).requires_grad_()
    _, chosen_r, _ = dpo_loss(policy, t(-3.0), t(-2.0), t(-2.0), beta=0.5)
    assert not chosen_r.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"loss_type": "hinge-ish"}, "loss_type"),
        ({"beta": 0.0}, "beta"),
        ({"label_smoothing": 0.7}, "label_smoothing"),
        ({"loss_type": "ipo", "label_smoothing": 0.1}, "label_smoothing"),
    ],
)
def test_dpo_rejects_bad_settings(kwargs, field):
    args = {"beta": 0.1, **kwargs}
    with pytest.raises(InputError, match=field):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), **args)


# ---------------------------------------------------------------- KTO


def test_kto_by_hand():
    policy, ref = t(-1.0, -1.0), t(-2.0, -2.0)  # r = 1 for both
    labels = torch.tensor([True, False])
    out, rewards = kto_loss(
        policy, ref, labels, kl_estimate=0.5, beta=2.0, desirable_weight=1.5, undesirable_weight=0.8
    )
    desirable = 1.5 * (1 - sigmoid(2.0 * (1.0 - 0.5)))
    undesirable = 0.8 * (1 - sigmoid(2.0 * (0.5 - 1.0)))
    assert out.tolist() == pytest.approx([desirable, undesirable], rel=1e-6)
    assert rewards.tolist() == pytest.approx([2.0, 2.0])


def test_kto_reference_point_is_clamped_and_detached():
    kl = torch.tensor(-3.0, requires_grad=True)
    policy = t(0.0).requires_grad_()
    out, _ = kto_loss(policy, t(0.0), torch.tensor([True]), kl_estimate=kl, beta=1.0)
    # z0 = max(-3, 0) = 0, r = 0: 1 - sigmoid(0)
    assert out.item() == pytest.approx(0.5)
    out.sum().backward()
    assert kl.grad is None
    assert policy.grad.item() == pytest.approx(-0.25)  # -sigmoid'(0) * beta


def test_kto_balanced_weights():
    assert kto_balanced_weights(100, 300) == (3.0, 1.0)
    assert kto_balanced_weights(50, 50) == (1.0, 1.0)
    lam_d, lam_u = kto_balanced_weights(400, 100, ratio=4 / 3)
    assert lam_d * 400 / (lam_u * 100) == pytest.approx(4 / 3)


@pytest.mark.parametrize(("n_d", "n_u", "ratio"), [(0, 10, 1.0), (10, 0, 1.0), (10, 10, 2.0)])
def test_kto_balanced_weights_rejects_bad_input(n_d, n_u, ratio):
    with pytest.raises(InputError):
        kto_balanced_weights(n_d, n_u, ratio=ratio)


# ---------------------------------------------------------------- PPO


def test_ppo_policy_ratio_is_exactly_one_on_identical_logprobs():
    torch.manual_seed(0)
    logp = torch.randn(4, 6)
    adv = torch.randn(4, 6)
    mask = torch.rand(4, 6) > 0.3
    loss, stats = ppo_policy_loss(logp, logp.clone(), adv, mask, clip_range=0.2)
    assert stats["ratio_mean"].item() == 1.0
    assert stats["clipfrac"].item() == 0.0
    assert stats["approx_kl"].item() == 0.0
    assert loss.item() == pytest.approx(-(adv[mask].mean().item()), abs=1e-6)


def test_ppo_policy_loss_by_hand():
    # token 0: ratio 1.5, advantage +1 -> max(-1.5, -1.2) = -1.2 (clipped)
    # token 1: ratio 0.5, advantage -1 -> max(0.5, 0.8) = 0.8 (clipped)
    # token 2: ratio 1.1, advantage +2 -> max(-2.2, -2.2) = -2.2 (inside the clip range)
    # token 3: padding with an absurd ratio; ignored
    old = t(0.0, 0.0, 0.0, 0.0)[None]
    new = t(math.log(1.5), math.log(0.5), math.log(1.1), 50.0)[None]
    adv = t(1.0, -1.0, 2.0, 1.0)[None]
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = ppo_policy_loss(new, old, adv, mask, clip_range=0.2)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3, rel=1e-5)
    assert stats["clipfrac"].item() == pytest.approx(2 / 3)
    k3 = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)]
    assert stats["approx_kl"].item() == pytest.approx(sum(k3) / 3, rel=1e-5)
    assert stats["ratio_mean"].item() == pytest.approx((1.5 + 0.5 + 1.1) / 3, rel=1e-6)


def test_ppo_policy_clipped_tokens_get_no_gradient():
    new = t(math.log(1.5), math.log(1.1)).requires_grad_()
    loss, _ = ppo_policy_loss(
        new[None], torch.zeros(1, 2), t(1.0, 1.0)[None], torch.ones(1, 2), 0.2
    )
    loss.backward()
    # d/dlogp of -A * ratio / 2 tokens = -ratio / 2 where not clipped
    assert new.grad.tolist() == pytest.approx([0.0, -1.1 / 2], rel=1e-5)


def test_ppo_value_loss_by_hand():
    # token 0: v 2, old 1, R 3, clip 0.5 -> v_clip 1.5: max(1, 2.25) = 2.25 (clipped larger)
    # token 1: v 1.2, old 1, R 3 -> v_clip 1.2: max(3.24, 3.24) = 3.24 (not clipped)
    # token 2: padding
    values = t(2.0, 1.2, 100.0)[None]
    old = t(1.0, 1.0, 0.0)[None]
    returns = t(3.0, 3.0, 0.0)[None]
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = ppo_value_loss(values, old, returns, mask, clip_range=0.5)
    assert loss.item() == pytest.approx(0.5 * (2.25 + 3.24) / 2, rel=1e-5)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["error"].item() == pytest.approx((1.0 + 3.24) / 2, rel=1e-5)


# ---------------------------------------------------------------- group baselines


def test_rloo_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    expected = [
        [1 - (2 + 6) / 2, 2 - (1 + 6) / 2, 6 - (1 + 2) / 2],
        [0 - 3 / 2, 0 - 3 / 2, 3 - 0],
    ]
    assert torch.allclose(rloo_advantages(rewards), torch.tensor(expected))


def test_grpo_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])
    # group 0: mean 2, unbiased std sqrt(((1)^2 + 0 + (1)^2) / 2) = 1
    out = grpo_advantages(rewards, eps=1e-4)
    assert out[0].tolist() == pytest.approx([-1 / 1.0001, 0.0, 1 / 1.0001], rel=1e-6)
    assert out[1].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("fn", [rloo_advantages, grpo_advantages])
def test_group_baselines_need_two_samples(fn):
    with pytest.raises(InputError, match="k>=2"):
        fn(torch.ones(4, 1))


# ---------------------------------------------------------------- SFT


def test_sft_loss_by_hand():
    # seq 3, vocab 2. Logits at position p predict the label at p + 1.
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [9.0, 9.0]]])  # (1, 3, 2)
    labels = torch.tensor([[-100, 1, 0]])
    # pos 0 predicts label 1: -log(1/2); pos 1 predicts label 0: -log(e^2 / (e^2 + 1))
    expected = (math.log(2) + -math.log(math.exp(2) / (math.exp(2) + 1))) / 2
    assert sft_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_sft_loss_is_a_token_mean_across_the_batch():
    logits = torch.zeros(2, 4, 3)  # uniform: every token costs log 3
    logits[1, 0, 0] = 5.0  # row 1's only scored token: -log(e^5 / (e^5 + 2))
    labels = torch.tensor([[0, 1, 2, 0], [-100, 0, -100, -100]])
    per_token = [math.log(3)] * 3 + [-math.log(math.exp(5) / (math.exp(5) + 2))]
    assert sft_loss(logits, labels).item() == pytest.approx(sum(per_token) / 4, rel=1e-6)


def test_sft_loss_with_nothing_to_learn_is_zero():
    assert sft_loss(torch.zeros(1, 3, 2), torch.full((1, 3), -100)).item() == 0.0
