"""Maths shared by every trainer: batch arithmetic, seeding, masked statistics, log-probs, GAE,
KL control and per-token rewards.

Conventions used throughout (the trainers rely on them):

- Masks are boolean or 0/1 tensors of the same shape as the values they mask; ``True`` marks a
  real (valid) token. Values under a ``False`` mask never influence a result, even when they are
  ``nan`` or ``inf`` (padding is selected away with ``torch.where``, not multiplied by zero).
- Log-probs of a sequence are *shifted*: for ``input_ids`` of shape ``(batch, seq)`` they have
  shape ``(batch, seq - 1)`` and column ``t`` scores token ``t + 1`` given tokens ``0..t``. The
  matching mask is ``response_mask[:, 1:]``.
- Per-token PPO rewards put the reward model's scalar on the *last real response token*; every
  response token also carries the KL penalty; positions after the last real token are zero.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from rlhfkit.errors import InputError
from rlhfkit.models.masks import (  # re-exported: trainers import them from here
    first_true_index,  # noqa: F401
    last_token_index,
    truncate_after_eos,  # noqa: F401
)
from rlhfkit.models.packing import Document

# ---------------------------------------------------------------- batch arithmetic and seeding


def exact_div(a: int, b: int, what: str) -> int:
    """``a // b``, or InputError naming ``what`` when ``b`` does not divide ``a``.

    Every derived batch size goes through this so that a config that silently drops samples
    fails at parse time instead.

    >>> exact_div(64, 8, "batch_size / mini_batch_size")
    8
    """
    if b == 0 or a % b != 0:
        raise InputError(f"{what}: {a} is not divisible by {b}; choose values that divide exactly")
    return a // b


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so that a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


# ---------------------------------------------------------------- masked statistics


def _valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with padding replaced by exact zeros (so nan/inf padding cannot leak)."""
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` over positions where ``mask`` is true (all of them, or along ``dim``)."""
    valid = _valid(x, mask)
    return valid.sum() if dim is None else valid.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is true. An empty selection gives 0, not nan,
    so a minibatch of responses that all ended at once cannot poison the loss.

    >>> masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0]))
    tensor(2.)
    """
    count = mask.bool().sum() if dim is None else mask.bool().sum(dim=dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over all positions where ``mask`` is true (Bessel-corrected when
    ``unbiased``)."""
    count = mask.bool().sum()
    if count == 0 or (unbiased and count < 2):
        raise ValueError(
            f"masked_var needs at least {2 if unbiased else 1} valid values, got {int(count)}"
        )
    centred = x - masked_mean(x, mask)
    var = masked_mean(centred * centred, mask)
    if unbiased:
        var = var * count / (count - 1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Scale ``x`` to unit variance (and zero mean when ``shift_mean``) using statistics of the
    valid positions only; padding positions come back as 0.

    Whitening over padding too would let the number of pad tokens move every advantage.
    """
    mean = masked_mean(x, mask)
    whitened = (x - mean) * torch.rsqrt(masked_var(x, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _valid(whitened, mask)


# ---------------------------------------------------------------- log-probs and entropy


def _per_leading_row(logits: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn`` to float32 slices of ``logits`` one leading row at a time, so temporaries are
    the size of one row (e.g. ``(seq, vocab)``), never of the whole batch."""
    if logits.dim() <= 2:
        return fn(logits.float())
    return torch.stack([fn(row.float()) for row in logits])


def logprobs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``log_softmax(logits / temperature)`` gathered at ``labels``, in float32.

    Shapes: logits ``(..., vocab)``, labels ``(...)`` -> ``(...)``. The full log-softmax is
    never materialised: log p(label) = z[label] - logsumexp(z) with z = logits / temperature,
    computed one leading row at a time (low-precision logits are upcast per row only).

    >>> logprobs_from_logits(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))
    tensor([-0.6931])
    """
    # Sampling divided by T, so every recomputation must too (PPO checklist item 3).
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1).float() / temperature
    lse = _per_leading_row(logits, lambda z: torch.logsumexp(z / temperature, dim=-1))
    return picked - lse


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of ``softmax(logits / temperature)`` over the last dim: ``(..., vocab) -> (...)``.

    H = logsumexp(z) - sum(softmax(z) * z), one leading row at a time to bound memory.
    """

    def entropy(z: torch.Tensor) -> torch.Tensor:
        z = z / temperature
        return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(dim=-1)

    return _per_leading_row(logits, entropy)


def position_ids_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only, so a left-padded row is scored exactly like the
    same row right-padded (this is what ``generate`` does; a plain forward pass does not)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def sequence_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token log-probs of ``input_ids`` under a causal LM, zero outside the response.

    Convention: inputs are ``(batch, seq)``; the result is ``(batch, seq - 1)`` and column ``t``
    is log p(input_ids[:, t + 1] | input_ids[:, :t + 1]). Use ``response_mask[:, 1:]`` as its
    mask. The caller decides ``no_grad`` and ``model.eval()``.

    Example::

        logp = sequence_logprobs(policy, ids, attn, resp_mask, temperature=0.7)  # (b, s-1)
        mask = resp_mask[:, 1:]
    """
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_attention_mask(attention_mask),
    ).logits  # (batch, seq, vocab)
    logp = logprobs_from_logits(logits[:, :-1], input_ids[:, 1:], temperature)  # (batch, seq-1)
    return _valid(logp, response_mask[:, 1:])


# ---------------------------------------------------------------- indexing and truncation


# ---------------------------------------------------------------- advantages


def gae_loop(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation as the textbook reverse loop over time; the reference
    that :func:`gae` is tested against. Inputs are ``(batch, T)``.

    A masked position contributes no reward and no value, and the bootstrap chain stops at it,
    so an episode ends at its last valid token. Returns ``(advantages, returns)``, zero on
    padding.
    """
    mask = mask.bool()
    rewards, values = _valid(rewards, mask), _valid(values, mask)
    steps = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        if t + 1 < steps:
            next_valid = mask[:, t + 1].to(rewards.dtype)
            next_value = values[:, t + 1] * next_valid
        else:
            next_valid = torch.zeros_like(running)
            next_value = torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * next_valid * running
        advantages[:, t] = running
    advantages = _valid(advantages, mask)
    return advantages, _valid(advantages + values, mask)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation without a Python loop over time.

    ``A_t = sum_{s >= t} (gamma * lam) ** (s - t) * delta_s`` as one matrix product with an
    upper-triangular discount matrix ``(T, T)``. The valid tokens of each row must form one
    contiguous span (leading and/or trailing padding, like a PPO response mask); for such masks
    the result equals :func:`gae_loop`. Returns ``(advantages, returns)``, zero on padding.

    >>> adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2), 1.0, 0.5)
    >>> adv
    tensor([[0.5000, 1.0000]])
    """
    mask = mask.bool()
    starts = (mask[:, 1:] & ~mask[:, :-1]).sum(dim=-1) + mask[:, 0].long()
    if bool((starts > 1).any()):
        raise ValueError("gae needs one contiguous span of valid tokens per row; use gae_loop")
    rewards, values = _valid(rewards, mask), _valid(values, mask)
    # Within one span, the value after the last valid token is zero (padding or end).
    next_values = torch.nn.functional.pad(values[:, 1:], (0, 1))  # (batch, T)
    deltas = _valid(rewards + gamma * next_values - values, mask)  # (batch, T)
    steps = rewards.shape[-1]
    idx = torch.arange(steps, device=rewards.device)
    offset = (idx.unsqueeze(0) - idx.unsqueeze(1)).to(rewards.dtype)  # [t, s] = s - t
    # [t, s] = (gamma * lam) ** (s - t) for s >= t, else 0
    discount = torch.triu((gamma * lam) ** offset.clamp(min=0))  # (T, T)
    advantages = _valid(deltas @ discount.T, mask)  # (batch, T)
    return advantages, _valid(advantages + values, mask)


# ---------------------------------------------------------------- KL control and rewards


class AdaptiveKLController:
    """KL coefficient that tracks a target KL (Ziegler et al. 2019, eq. 2): the coefficient grows
    when the measured KL is above target and shrinks below it, by at most 20% of the error per
    horizon's worth of steps.

    >>> ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    >>> ctl.update(current_kl=12.0, n_steps=256); ctl.value > 0.1
    True
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise InputError(
                f"adaptive KL needs target > 0 and horizon > 0, got {target}, {horizon}"
            )
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


class FixedKLController:
    """Constant KL coefficient; ``update`` is accepted and ignored so trainers treat both alike."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        return None


def per_token_kl_rewards(
    score: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO rewards: ``-kl_coef * (logp - ref_logp)`` on every response token plus the
    scalar ``score`` (batch,) on the last real response token; zero elsewhere.

    ``logprobs``, ``ref_logprobs`` and ``mask`` are ``(batch, T)`` and aligned (see the module
    docstring). Returns ``(rewards, kl_per_token)``; the KL is the k1 estimate, zero on padding.
    Rows with an empty mask get no score.
    """
    mask = mask.bool()
    kl = _valid(logprobs - ref_logprobs, mask)  # (batch, T)
    rewards = -kl_coef * kl
    last = last_token_index(mask)  # (batch,)
    rows = torch.arange(mask.shape[0], device=mask.device)
    has_tokens = last >= 0
    score_here = torch.where(has_tokens, score.to(rewards.dtype), torch.zeros_like(rewards[:, 0]))
    rewards = rewards.index_put((rows, last.clamp(min=0)), score_here, accumulate=True)
    return rewards, kl


# ---------------------------------------------------------------- rollouts (prompt + response)


def rollout_documents(gen, group_size: int = 1) -> list[Document]:
    """A generated batch as :func:`~rlhfkit.models.packing.pack` documents: each row's real
    prompt tokens and its response up to and including the first EOS. With ``group_size`` k,
    every k consecutive rows share one prompt (RLOO's groups): one document per group, its
    prompt once and the k responses after it, in row order."""
    rows = [
        (p[m.bool()].tolist(), r[rm].tolist())
        for p, m, r, rm in zip(
            gen.prompt_ids, gen.prompt_mask, gen.response_ids, gen.response_mask.bool(), strict=True
        )
    ]
    return [
        Document(rows[g][0], [response for _, response in rows[g : g + group_size]])
        for g in range(0, len(rows), group_size)
    ]


def scatter_response(flat: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(n_valid,) values in row-major order back to (b, R), zero elsewhere."""
    out = torch.zeros(response_mask.shape, dtype=flat.dtype, device=flat.device)
    out[response_mask] = flat
    return out
