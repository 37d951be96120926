"""Training losses as pure functions of tensors: no models, no optimisers, no config objects.

Each function follows the paper it names (and TRL's conventions where TRL implements it), so a
result here can be checked by hand; tests/train/test_losses.py does exactly that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhfkit.errors import InputError
from rlhfkit.train.common import masked_mean

# ---------------------------------------------------------------- reward model


def bradley_terry_loss(
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    margin: torch.Tensor | None = None,
    head_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise reward-model loss ``-log sigmoid(r_chosen - r_rejected - margin)``.

    Scores are ``(batch,)`` or ``(batch, heads)`` for a multi-attribute reward model.
    ``margin`` is ``(batch,)`` (one per pair, broadcast over heads) or the scores' shape.
    ``head_mask`` (scores' shape, bool) marks which (pair, attribute) comparisons were actually
    judged; the loss and accuracy average over those only. Returns ``(loss, accuracy)`` where
    accuracy is the share of judged comparisons with ``r_chosen > r_rejected`` (ties count as
    wrong).

    >>> bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0]))[0]
    tensor(0.6931)
    """
    diff = chosen_scores - rejected_scores  # (batch,) or (batch, heads)
    if margin is not None:
        if margin.dim() < diff.dim():
            margin = margin.unsqueeze(-1)  # (batch, 1): same margin for every head
        diff = diff - margin
    if head_mask is None:
        head_mask = torch.ones_like(diff, dtype=torch.bool)
    loss = masked_mean(-F.logsigmoid(diff), head_mask)
    correct = (chosen_scores > rejected_scores).to(diff.dtype)
    return loss, masked_mean(correct, head_mask).detach()


# ---------------------------------------------------------------- preference optimisation


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO (Rafailov et al. 2023) or IPO (Azar et al. 2023) loss, TRL conventions.

    Inputs are ``(batch,)`` summed response log-probs (for IPO, TRL and the paper use the
    length-averaged log-probs; the caller chooses). With
    ``h = (pi_c - pi_r) - (ref_c - ref_r)``:

    - ``sigmoid``: ``-(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)`` (eps is
      ``label_smoothing``, conservative DPO);
    - ``ipo``: ``(h - 1 / (2 beta)) ** 2``.

    Returns ``(losses, chosen_rewards, rejected_rewards)``, each ``(batch,)``; the implicit
    rewards ``beta * (pi - ref)`` are detached (log them, do not train on them).

    >>> z = torch.zeros(1)
    >>> dpo_loss(z, z, z, z, beta=0.1)[0]
    tensor([0.6931])
    """
    if beta <= 0:
        raise InputError(f"beta: expected a positive number, got {beta}")
    logits = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
    if loss_type == "sigmoid":
        if not 0.0 <= label_smoothing < 0.5:
            raise InputError(f"label_smoothing: expected 0 <= value < 0.5, got {label_smoothing}")
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * logits) - (
            label_smoothing * F.logsigmoid(-beta * logits)
        )
    elif loss_type == "ipo":
        if label_smoothing != 0.0:
            raise InputError("label_smoothing: IPO has no label smoothing; set it to 0")
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise InputError(f"loss_type: expected 'sigmoid' or 'ipo', got {loss_type!r}")
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    labels: torch.Tensor,
    kl_estimate: torch.Tensor | float,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example KTO loss (Ethayarajh et al. 2024, eq. 8).

    With the implied reward ``r = log pi(y|x) - log ref(y|x)`` and reference point
    ``z0 = max(kl_estimate, 0)`` (detached: the paper does not backpropagate through it):

    - desirable (``labels`` true): ``lambda_D * (1 - sigmoid(beta * (r - z0)))``
    - undesirable: ``lambda_U * (1 - sigmoid(beta * (z0 - r)))``

    ``kl_estimate`` is the batch estimate of KL(pi || ref), usually from mismatched
    prompt/completion pairs. Returns ``(losses, rewards)``, each ``(batch,)``; rewards are
    ``beta * r`` detached. Average ``losses`` over the batch to train.

    >>> kto_loss(torch.zeros(1), torch.zeros(1), torch.tensor([True]), 0.0, beta=0.1)[0]
    tensor([0.5000])
    """
    if beta <= 0:
        raise InputError(f"beta: expected a positive number, got {beta}")
    labels = labels.bool()
    log_ratio = policy_logps - ref_logps  # (batch,)
    z0 = torch.as_tensor(kl_estimate, dtype=log_ratio.dtype, device=log_ratio.device)
    z0 = z0.detach().clamp(min=0)
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (log_ratio - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - log_ratio)))
    losses = torch.where(labels, desirable, undesirable)
    return losses, beta * log_ratio.detach()


def kto_balanced_weights(
    n_desirable: int, n_undesirable: int, ratio: float = 1.0
) -> tuple[float, float]:
    """``(desirable_weight, undesirable_weight)`` for a data set with the given class counts.

    The KTO paper recommends ``lambda_D * n_D / (lambda_U * n_U)`` in ``[1, 4/3]``. We keep
    ``lambda_U = 1`` (as the paper and TRL do) and solve for ``lambda_D`` at ``ratio``, by
    default 1, the lower end: on balanced data it gives the paper's and TRL's default
    ``(1.0, 1.0)``, and it is the point that reweights least while staying in the range.

    >>> kto_balanced_weights(100, 300)
    (3.0, 1.0)
    """
    if n_desirable <= 0 or n_undesirable <= 0:
        raise InputError(
            "KTO data needs both desirable and undesirable examples, got "
            f"{n_desirable} desirable and {n_undesirable} undesirable"
        )
    if not 1.0 <= ratio <= 4 / 3:
        raise InputError(f"ratio: expected a value in [1, 4/3] (KTO paper), got {ratio}")
    return ratio * n_undesirable / n_desirable, 1.0


# ---------------------------------------------------------------- PPO


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate objective (Schulman et al. 2017), as a loss to minimise.

    Inputs are ``(batch, T)`` per-token tensors; everything is averaged over valid tokens.
    Returns ``(loss, stats)`` with detached ``stats``: ``clipfrac`` (share of tokens where the
    clipped branch was taken), ``approx_kl`` (the k3 estimator ``(ratio - 1) - log ratio``,
    non-negative and unbiased for KL(old || new)), and ``ratio_mean``.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean((ratio - 1) - log_ratio, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss ``0.5 * max((v - R)^2, (v_clip - R)^2)`` averaged over valid tokens,
    where ``v_clip`` is ``v`` kept within ``clip_range`` of ``old_values``.

    Returns ``(loss, stats)`` with detached ``stats``: ``clipfrac`` (share of tokens where the
    clipped error was the larger) and ``error`` (mean squared error of the unclipped values).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped_error > unclipped_error).float(), mask),
            "error": masked_mean(unclipped_error, mask),
        }
    return loss, stats


# ---------------------------------------------------------------- group baselines


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024) for ``(num_prompts, k)``
    rewards of ``k`` samples per prompt: each sample's baseline is the mean of the other k-1.

    >>> rloo_advantages(torch.tensor([[1.0, 2.0, 6.0]]))
    tensor([[-3.0000, -1.5000,  4.5000]])
    """
    k = rewards.shape[-1]
    if rewards.dim() != 2 or k < 2:
        raise InputError(
            f"RLOO needs rewards of shape (num_prompts, k>=2), got {tuple(rewards.shape)}"
        )
    baseline = (rewards.sum(dim=-1, keepdim=True) - rewards) / (k - 1)  # (num_prompts, k)
    return rewards - baseline


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Group-normalised advantages (Shao et al. 2024, GRPO) for ``(num_prompts, k)`` rewards:
    ``(r - mean) / (std + eps)`` within each prompt's group, with the Bessel-corrected std as in
    TRL. A group whose rewards are all equal gets zero advantage.
    """
    k = rewards.shape[-1]
    if rewards.dim() != 2 or k < 2:
        raise InputError(
            f"GRPO needs rewards of shape (num_prompts, k>=2), got {tuple(rewards.shape)}"
        )
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True)  # unbiased
    return (rewards - mean) / (std + eps)


# ---------------------------------------------------------------- supervised fine-tuning


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Token-mean next-token cross entropy.

    ``logits`` ``(batch, seq, vocab)`` and ``labels`` ``(batch, seq)`` are aligned with the
    inputs, as in transformers (``labels = input_ids`` with prompt and padding set to
    ``ignore_index``); the shift by one happens here. The mean is over all non-ignored tokens of
    the batch (not per sequence first); a batch with none gives 0.

    >>> sft_loss(torch.zeros(1, 2, 4), torch.tensor([[-100, 3]]))
    tensor(1.3863)
    """
    shifted_logits = logits[:, :-1].float()  # (batch, seq-1, vocab)
    shifted_labels = labels[:, 1:]  # (batch, seq-1)
    total = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]),
        shifted_labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="sum",
    )
    count = (shifted_labels != ignore_index).sum()
    return total / count.clamp(min=1)
