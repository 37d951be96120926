"""Batched generation: left-padded prompts, KV cache, truncation after the first EOS.

Example::

    policy = load_policy("tiny")
    replies = generate_replies(policy, [[{"role": "user", "content": "Hi"}]], max_new_tokens=8)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.data.records import Message
from rlhfkit.models.chat import encode_prompt, left_pad
from rlhfkit.models.loading import Policy


@dataclass
class Generation:
    """A batch of prompts and sampled responses, token-level, ready for scoring."""

    prompt_ids: torch.Tensor
    """(batch, prompt_len) left-padded prompt tokens."""
    prompt_mask: torch.Tensor
    """(batch, prompt_len) 1 on real prompt tokens."""
    response_ids: torch.Tensor
    """(batch, resp_len) response tokens, pad after the first EOS."""
    response_mask: torch.Tensor
    """(batch, resp_len) 1 on response tokens up to and including the first EOS."""
    has_eos: torch.Tensor
    """(batch,) bool: the response ended by itself."""
    texts: list[str]
    """Decoded responses without special tokens."""


@torch.no_grad()
def generate(
    policy: Policy,
    prompts: list[list[Message]],
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    batch_size: int = 32,
    max_prompt_tokens: int | None = None,
) -> Generation:
    """Sample (temperature > 0) or decode greedily (temperature == 0) a response per prompt.

    Prompts longer than ``max_prompt_tokens`` keep their last tokens (the end of a conversation
    is what the reply depends on).
    """
    tok = policy.tokenizer
    model = policy.model
    encoded = [encode_prompt(tok, p) for p in prompts]
    if max_prompt_tokens:
        encoded = [e[-max_prompt_tokens:] for e in encoded]
    generator_state = None
    if seed is not None:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, len(encoded), batch_size):
            ids, mask = left_pad(encoded[start : start + batch_size], tok.pad_token_id)
            ids, mask = ids.to(model.device), mask.to(model.device)
            sample = temperature > 0
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                min_new_tokens=1,
                do_sample=sample,
                temperature=temperature if sample else None,
                top_p=top_p if sample else None,
                top_k=0 if sample else None,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                use_cache=True,
            )
            chunks.append((ids, mask, out[:, ids.shape[1] :]))  # (batch, new_tokens)
    finally:
        if generator_state is not None:
            torch.random.set_rng_state(generator_state)
        model.train(was_training)
    prompt_ids, prompt_mask = _cat_left(
        [c[0] for c in chunks], [c[1] for c in chunks], tok.pad_token_id
    )
    responses = _cat_right([c[2] for c in chunks], tok.pad_token_id)
    response_ids, response_mask, has_eos = truncate_after_eos(
        responses, tok.eos_token_id, tok.pad_token_id
    )
    texts = tok.batch_decode(
        response_ids * response_mask + tok.pad_token_id * (1 - response_mask),
        skip_special_tokens=True,
    )
    return Generation(prompt_ids, prompt_mask, response_ids, response_mask, has_eos, texts)


def generate_replies(policy: Policy, prompts: list[list[Message]], **kwargs) -> list[str]:
    """Just the reply texts."""
    return generate(policy, prompts, **kwargs).texts


def truncate_after_eos(
    tokens: torch.Tensor, eos_id: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep tokens up to and including the first EOS; pad the rest.

    Returns (tokens, mask, has_eos); tokens and mask are (batch, seq), has_eos is (batch,).
    """
    is_eos = tokens == eos_id
    has_eos = is_eos.any(dim=1)
    # position of the first EOS, or seq-1 (keep everything) when there is none
    first = torch.where(
        has_eos,
        is_eos.int().argmax(dim=1),
        torch.full_like(has_eos, tokens.shape[1] - 1, dtype=torch.long),
    )
    positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)  # (1, seq)
    mask = (positions <= first.unsqueeze(1)).long()
    # a response generated past an earlier EOS may also contain pads from generate(); keep them
    # masked only where they are past the first EOS
    return torch.where(mask.bool(), tokens, torch.full_like(tokens, pad_id)), mask, has_eos


def _cat_left(ids: list[torch.Tensor], masks: list[torch.Tensor], pad_id: int):
    width = max(t.shape[1] for t in ids)
    pad = lambda t, v: torch.nn.functional.pad(t, (width - t.shape[1], 0), value=v)  # noqa: E731
    return torch.cat([pad(t, pad_id) for t in ids]), torch.cat([pad(m, 0) for m in masks])


def _cat_right(ids: list[torch.Tensor], pad_id: int) -> torch.Tensor:
    width = max(t.shape[1] for t in ids)
    return torch.cat(
        [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=pad_id) for t in ids]
    )
