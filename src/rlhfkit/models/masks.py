"""Index and mask helpers shared by generation, scoring and training.

They live with the models (a foundation package) so that generation and the reward heads use
the same definitions as the trainers, which import them from here via ``train.common``.
"""

from __future__ import annotations

import torch


def first_true_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first true value along the last dim; rows with none give ``mask.shape[-1]``.

    >>> first_true_index(torch.tensor([[0, 1, 1], [0, 0, 0]]))
    tensor([1, 3])
    """
    mask = mask.bool()
    length = mask.shape[-1]
    # argmax returns the first maximal index; rows with no True would wrongly give 0.
    first = mask.to(torch.uint8).argmax(dim=-1)
    return torch.where(mask.any(dim=-1), first, torch.full_like(first, length))


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token in each row, for left or right padding alike; rows without
    any real token give -1 (check for it: as an index it would pick the last position).

    >>> last_token_index(torch.tensor([[1, 1, 0], [0, 1, 1]]))
    tensor([1, 2])
    """
    length = attention_mask.shape[-1]
    return length - 1 - first_true_index(attention_mask.flip(-1))


def truncate_after_eos(
    tokens: torch.Tensor, eos_id: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each response ``(batch, resp_len)`` after its first EOS.

    Returns ``(tokens, response_mask, has_eos)``: tokens with everything after the first EOS set
    to ``pad_id`` (the EOS itself is kept: the policy must be credited for stopping), a boolean
    mask that is true up to and including the first EOS (the whole row when there is no EOS),
    and a boolean per row saying whether an EOS was generated at all.

    >>> truncate_after_eos(torch.tensor([[5, 2, 7]]), eos_id=2, pad_id=0)[0]
    tensor([[5, 2, 0]])
    """
    is_eos = tokens == eos_id
    first_eos = first_true_index(is_eos)  # (batch,); resp_len when no EOS
    positions = torch.arange(tokens.shape[-1], device=tokens.device)
    response_mask = positions.unsqueeze(0) <= first_eos.unsqueeze(-1)  # (batch, resp_len)
    truncated = tokens.masked_fill(~response_mask, pad_id)
    return truncated, response_mask, is_eos.any(dim=-1)
