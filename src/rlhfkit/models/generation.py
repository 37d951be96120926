"""Batched generation: left-padded prompts, KV cache, truncation after the first EOS.

Example::

    policy = load_policy("tiny")
    replies = generate_replies(policy, [[{"role": "user", "content": "Hi"}]], max_new_tokens=8)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch

from rlhfkit.data.records import Message
from rlhfkit.models.chat import encode_prompt, left_pad
from rlhfkit.models.loading import Policy
from rlhfkit.models.masks import truncate_after_eos


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
    """(batch, resp_len) bool, true on response tokens up to and including the first EOS."""
    has_eos: torch.Tensor
    """(batch,) bool: the response ended by itself."""
    texts: list[str]
    """Decoded responses without special tokens."""

    def rows(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt and response side by side: ``(ids, attention_mask)``, each ``(batch,
        prompt_len + resp_len)``, as a reward model or :func:`~rlhfkit.models.pack_rows` takes
        them."""
        ids = torch.cat([self.prompt_ids, self.response_ids], dim=1)
        attn = torch.cat([self.prompt_mask, self.response_mask.long()], dim=1)
        return ids.to(device), attn.to(device)

    def ended_rows(self, eos_token_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`rows`, but every response that did not end by itself gets ``eos_token_id``
        after its last token (one column more), so ended and cut-off replies look alike to a
        scorer: what a reward model then prefers is not merely that a reply ended."""
        ids, attn = self.rows()
        b = ids.shape[0]
        ids = torch.cat([ids, ids.new_zeros(b, 1)], dim=1)
        attn = torch.cat([attn, attn.new_zeros(b, 1)], dim=1)
        end = self.prompt_ids.shape[1] + self.response_mask.sum(-1)  # first free column
        cut = (~self.has_eos).nonzero(as_tuple=True)[0]
        ids[cut, end[cut]] = eos_token_id
        attn[cut, end[cut]] = 1
        return ids.to(device), attn.to(device)


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
    progress: bool = False,
) -> Generation:
    """Sample (temperature > 0) or decode greedily (temperature == 0) a response per prompt.

    Prompts longer than ``max_prompt_tokens`` keep their last tokens (the end of a conversation
    is what the reply depends on). When there is more than one batch, prompts are batched in
    order of length (less padding in every forward pass) and the results returned in the order
    given. ``progress`` prints a line per batch to stderr.
    """
    tok = policy.tokenizer
    model = policy.model
    encoded = [encode_prompt(tok, p) for p in prompts]
    if max_prompt_tokens:
        encoded = [e[-max_prompt_tokens:] for e in encoded]
    order = list(range(len(encoded)))
    if len(encoded) > batch_size:
        order.sort(key=lambda i: len(encoded[i]))
        encoded = [encoded[i] for i in order]
    started = time.time()
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
            if progress:
                done, took = start + ids.shape[0], time.time() - started
                eta = took / done * (len(encoded) - done)
                print(
                    f"[generate] {done}/{len(encoded)} replies, {took:.0f}s, eta {eta:.0f}s",
                    file=sys.stderr,
                    flush=True,
                )
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
    if order != sorted(order):
        back = torch.empty(len(order), dtype=torch.long)
        back[torch.tensor(order)] = torch.arange(len(order))  # sorted position of each prompt
        prompt_ids, prompt_mask = prompt_ids[back], prompt_mask[back]
        response_ids, response_mask, has_eos = (
            response_ids[back],
            response_mask[back],
            has_eos[back],
        )
    # everything after the first EOS is already pad, which decoding skips
    texts = tok.batch_decode(response_ids, skip_special_tokens=True)
    return Generation(prompt_ids, prompt_mask, response_ids, response_mask, has_eos, texts)


def generate_replies(policy: Policy, prompts: list[list[Message]], **kwargs) -> list[str]:
    """Just the reply texts."""
    return generate(policy, prompts, **kwargs).texts


def _cat_left(ids: list[torch.Tensor], masks: list[torch.Tensor], pad_id: int):
    width = max(t.shape[1] for t in ids)
    pad = lambda t, v: torch.nn.functional.pad(t, (width - t.shape[1], 0), value=v)  # noqa: E731
    return torch.cat([pad(t, pad_id) for t in ids]), torch.cat([pad(m, 0) for m in masks])


def _cat_right(ids: list[torch.Tensor], pad_id: int) -> torch.Tensor:
    width = max(t.shape[1] for t in ids)
    return torch.cat(
        [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=pad_id) for t in ids]
    )
