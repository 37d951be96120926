"""Scalar heads on a causal LM body: reward models (one head per attribute) and value models.

A reward model is a standard ``*ForSequenceClassification`` model (``num_labels`` = number of
heads), so ``AutoModelForSequenceClassification.from_pretrained`` loads what we save. We score
it ourselves at the last real token, found from the attention mask (checklist point 2: never
"the last position"), so left and right padding give the same score. Normalisation (offset and
scale per head, checklist point 7) is stored in the config under ``rlhfkit_reward``.

Example::

    rm = load_reward_model("runs/rm/model")
    scores = RewardModel(rm.model)(ids, attention_mask)          # (batch, heads), raw
    rewards = normalize(scores, rm.model.config)                 # SFT responses ~ mean 0
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from transformers import (
    AutoModelForSequenceClassification,
    LlamaForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhfkit.errors import InputError
from rlhfkit.models.loading import (
    _first_line,
    load_tokenizer,
    resolve_model_path,
    tiny_config,
    tiny_policy,
    tiny_tokenizer,
)
from rlhfkit.models.masks import last_token_index
from rlhfkit.models.packing import Packed, packed_hidden

NORM_KEY = "rlhfkit_reward"


@dataclass
class ScalarModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    heads: list[str]


def load_reward_model(
    name: str | os.PathLike,
    heads: list[str] | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> ScalarModel:
    """Load a reward/value model. From a causal LM (or "default"/"tiny") a new head is created
    with one output per name in ``heads``; from a saved reward model, its heads are kept."""
    heads = heads or ["preference"]
    if str(name) == "tiny":
        tok = tiny_tokenizer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForSequenceClassification(tiny_config(tok, num_labels=len(heads)))
            # same body as the tiny policy, so a tiny RM "starts from the SFT model" too
            body = tiny_policy(seed=seed).model.model.state_dict()
            model.model.load_state_dict(body)
    else:
        path = resolve_model_path(name)
        tok = load_tokenizer(name)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype)
            saved = (getattr(model.config, NORM_KEY, None) or {}).get("heads")
            if saved:
                heads = saved
            elif model.config.num_labels != len(heads):
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, dtype=dtype, num_labels=len(heads)
                )
        except (OSError, ValueError) as exc:
            raise InputError(
                f"model {name!r}: cannot load as a reward model ({_first_line(exc)})"
            ) from None
    model.config.pad_token_id = tok.pad_token_id
    model.config.id2label = dict(enumerate(heads))
    model.config.label2id = {h: i for i, h in enumerate(heads)}
    norm = getattr(model.config, NORM_KEY, None) or {}
    norm.setdefault("heads", heads)
    setattr(model.config, NORM_KEY, norm)
    model.eval()
    return ScalarModel(model, tok, heads)


def _body_and_head(model):
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.base_model, inner.score


class RewardModel(torch.nn.Module):
    """Scores at the last real token: ``forward(ids, mask) -> (batch, heads)``.

    With a :class:`~rlhfkit.models.packing.Packed` batch as the only argument, it scores every
    packed sequence at its last token: ``(n_sequences, heads)``, no padding computed (a prompt
    shared by chosen and rejected is computed once; see :mod:`rlhfkit.models.packing`).
    """

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor | Packed, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        body, head = _body_and_head(self.model)
        if isinstance(input_ids, Packed):
            hidden = packed_hidden(body, input_ids)  # (rows, L, hidden)
            return head(input_ids.gather(hidden, input_ids.ends)).float()  # (n_sequences, heads)
        hidden = _hidden(self.model, input_ids, attention_mask)  # (batch, seq, hidden)
        last = last_token_index(attention_mask)  # (batch,)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return head(hidden[rows, last]).float()  # (batch, heads)


class ValueModel(torch.nn.Module):
    """Per-token values from head 0: ``forward(ids, mask) -> (batch, seq)``; with a
    :class:`~rlhfkit.models.packing.Packed` batch, the values at ``packed.predict`` (the state
    before each continuation token): ``(n_targets,)``."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor | Packed, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if isinstance(input_ids, Packed):
            body, head = _body_and_head(self.model)
            hidden = packed_hidden(body, input_ids)
            return head(input_ids.gather(hidden, input_ids.predict))[..., 0].float()
        hidden = _hidden(self.model, input_ids, attention_mask)
        _, head = _body_and_head(self.model)
        return head(hidden)[..., 0].float()  # (batch, seq)


def _hidden(model, input_ids, attention_mask):
    body, _ = _body_and_head(model)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return body(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
    ).last_hidden_state


def normalize(scores: torch.Tensor, config) -> torch.Tensor:
    """Apply the stored per-head offset and scale: ``(scores - offset) / scale``."""
    norm = getattr(config, NORM_KEY, None) or {}
    offset = torch.tensor(norm.get("offset") or [0.0] * scores.shape[-1], device=scores.device)
    scale = torch.tensor(norm.get("scale") or [1.0] * scores.shape[-1], device=scores.device)
    return (scores - offset) / scale


def set_normalization(config, scores: torch.Tensor) -> dict:
    """Store offset = mean and scale = std of ``scores`` (n, heads) on reference responses."""
    norm = dict(getattr(config, NORM_KEY, None) or {})
    norm["offset"] = scores.mean(dim=0).tolist()
    norm["scale"] = (
        scores.std(dim=0).clamp(min=1e-6).tolist()
        if scores.shape[0] > 1
        else [1.0] * scores.shape[-1]
    )
    setattr(config, NORM_KEY, norm)
    return norm
