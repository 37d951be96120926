"""One place that turns conversations into tokens, so every trainer and the generator agree.

A training sequence is ``chat_template(prompt, add_generation_prompt=True) + response + EOS``;
the EOS is part of the response (it is what teaches the model to stop, checklist point 1).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from rlhfkit.data.records import Message


def prompt_text(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> str:
    """The prompt as text, ending with the assistant header the model continues from."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> list[int]:
    return tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]


def encode_response(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a reply followed by EOS."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [*ids, tokenizer.eos_token_id]


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (batch, longest), padded on the left."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if seq:
            ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq) :] = 1
    return ids, mask


def right_pad(
    sequences: list[list[int]], pad_id: int, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (batch, width or longest), padded on the right."""
    width = width or max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        seq = seq[:width]
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask
