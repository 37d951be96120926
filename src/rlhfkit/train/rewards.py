"""What PPO optimises: a reward function over (prompt, reply), pluggable.

A :class:`RewardFunction` returns one raw score per rollout; PPO normalises it with the
function's ``normalization`` (offset and scale, fitted on the starting policy's own replies and
saved in checkpoints) before adding the KL penalty. Two kinds:

- a reward-model directory (``runs/rm/model``): head 0 of the frozen model, scored at the last
  real token of prompt + reply, exactly as PPO always did;
- a personality spec (``personality:concise`` or ``my-spec.yaml``): the spec's composite reward
  (:func:`rlhfkit.personality.composite_reward`) of the reply text. A spec with ``head:LABEL``
  terms names the reward model that supplies them after ``@``:
  ``personality:helpful-harmless@runs/rm/model``.

Example::

    reward = load_reward("personality:concise", policy.tokenizer, device="cpu")
    raw = reward.raw(prompts, gen.texts, ids, attention_mask)     # (batch,)
    scores = normalize_raw(raw, reward.normalization)
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any, Protocol

import torch

from rlhfkit.data.records import Message
from rlhfkit.errors import InputError

PERSONALITY_PREFIX = "personality:"


class RewardFunction(Protocol):
    """A frozen reward over a batch of rollouts."""

    normalization: dict[str, Any]
    """``{"offset": [float], "scale": [float], ...}``; raw scores are mapped to
    ``(raw - offset[0]) / scale[0]``. JSON-safe: saved with every checkpoint."""

    def raw(
        self,
        prompts: list[list[Message]],
        texts: list[str],
        ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Raw scores ``(batch,)`` of the replies ``texts`` to ``prompts``; ``ids`` and
        ``attention_mask`` ``(batch, seq)`` are the same rollouts as tokens (prompt + reply)."""
        ...

    def provenance(self) -> dict[str, Any]:
        """What the reward was, for ``provenance.json``."""
        ...


def normalize_raw(raw: torch.Tensor, normalization: dict[str, Any]) -> torch.Tensor:
    """``(raw - offset[0]) / scale[0]``: ``(b,) -> (b,)`` (identity when none is stored)."""
    offset = torch.tensor((normalization.get("offset") or [0.0])[:1], device=raw.device)
    scale = torch.tensor((normalization.get("scale") or [1.0])[:1], device=raw.device)
    return (raw - offset) / scale


class RewardModelReward:
    """Head 0 of a reward-model directory, its normalisation kept in the model's config (where
    ``rlhfkit reward train`` stored it, so checkpoints and provenance read as before)."""

    def __init__(self, path: str, policy_tokenizer, device) -> None:
        from rlhfkit.train.base import frozen_reward_model

        self.path = path
        self.scorer, self.rm = frozen_reward_model(path, policy_tokenizer, device)

    @property
    def normalization(self) -> dict[str, Any]:
        return self.rm.model.config.rlhfkit_reward

    @normalization.setter
    def normalization(self, value: dict[str, Any]) -> None:
        self.rm.model.config.rlhfkit_reward = value

    @torch.no_grad()
    def raw(self, prompts, texts, ids, attention_mask) -> torch.Tensor:
        from rlhfkit.models.packing import pack_rows

        return self.scorer(pack_rows(ids, attention_mask))[:, 0]  # (b,), no padding computed

    def provenance(self) -> dict[str, Any]:
        from rlhfkit.train.run import describe_input

        return describe_input(self.path)


class PersonalityReward:
    """The composite reward of a personality spec, computed on the reply text.

    ``head:LABEL`` terms come from the reward model given as ``heads`` (scored on prompt +
    reply at the last real token, normalised with the model's stored offset and scale, then
    squashed into [0, 1] with a sigmoid, so the starting policy's replies sit near 0.5).
    ``rm:PATH#INDEX`` terms are loaded once and scored on the rendered conversation.
    """

    def __init__(self, spec_ref: str, policy_tokenizer, device, heads: str | None = None) -> None:
        from rlhfkit.personality import load_spec
        from rlhfkit.personality.scorers import RewardHeadScorer

        self.spec_ref = spec_ref
        self.spec = load_spec(spec_ref)
        self.heads_path = heads
        self.normalization: dict[str, Any] = {}
        self._fitted: tuple[list, list[str], dict[str, list[float]]] | None = None
        self.head_model = None
        labels = self.spec.heads()
        if labels and heads is None:
            raise InputError(
                f"spec {self.spec.name!r} weighs {', '.join('head:' + h for h in labels)}:"
                f" name the reward model that scores them, e.g."
                f" {PERSONALITY_PREFIX}{spec_ref}@runs/rm/model"
            )
        if heads is not None:
            from rlhfkit.train.base import frozen_reward_model

            self.head_model, rm = frozen_reward_model(heads, policy_tokenizer, device)
            self.head_config = rm.model.config
            missing = [h for h in labels if h not in rm.heads]
            if missing:
                raise InputError(
                    f"{heads}: no head labelled {', '.join(map(repr, missing))}; the model's"
                    f" heads are {', '.join(rm.heads)}"
                )
            self.head_index = {h: rm.heads.index(h) for h in labels}
        self.rm_terms = {
            term: RewardHeadScorer.from_reference(term)
            for term, weight in self.spec.weights.items()
            if term.startswith("rm:") and weight != 0.0
        }

    @torch.no_grad()
    def head_scores(self, prompts, texts, ids, attention_mask) -> dict[str, list[float]]:
        """[0, 1] scores of every ``head:`` and ``rm:`` term of the spec for these rollouts."""
        from rlhfkit.models.chat import prompt_text
        from rlhfkit.models.heads import normalize

        out: dict[str, list[float]] = {}
        if self.head_model is not None and self.head_index:
            raw = self.head_model(ids, attention_mask)  # (b, heads)
            unit = torch.sigmoid(normalize(raw, self.head_config))  # (b, heads)
            for label, index in self.head_index.items():
                out[label] = unit[:, index].tolist()
        for term, scorer in self.rm_terms.items():
            tok = scorer.tokenizer
            if tok.chat_template:
                rendered = [prompt_text(tok, p) + t for p, t in zip(prompts, texts, strict=True)]
            else:
                rendered = list(texts)
            out[term] = scorer(rendered)
        return out

    def fit(self, prompts, texts, ids, attention_mask) -> None:
        """Fit each term's spread on the starting policy's replies (``units: sd``), stored in
        ``normalization["term_spreads"]`` so that checkpoints and provenance keep it."""
        from rlhfkit.personality.spec import term_spreads

        heads = self.head_scores(prompts, texts, ids, attention_mask)
        self.normalization["term_spreads"] = term_spreads(self.spec, list(texts), heads)
        # the trainer scores these same replies next (the reward's offset and scale): keep the
        # heads' scores for that one call rather than run the reward models over them again
        self._fitted = (list(prompts), list(texts), heads)

    def raw(self, prompts, texts, ids, attention_mask) -> torch.Tensor:
        from rlhfkit.personality import composite_reward

        fitted, self._fitted = self._fitted, None
        if fitted is not None and fitted[:2] == (list(prompts), list(texts)):
            heads = fitted[2]
        else:
            heads = self.head_scores(prompts, texts, ids, attention_mask)
        spreads = self.normalization.get("term_spreads")
        values = composite_reward(self.spec, list(texts), heads, spreads)
        return torch.tensor(values, dtype=torch.float32, device=ids.device)  # (b,)

    def provenance(self) -> dict[str, Any]:
        from rlhfkit.train.run import describe_input

        entry: dict[str, Any] = {
            "personality": self.spec.name,
            "weights": self.spec.weights,
            "units": self.spec.units,
            "kl_budget": self.spec.kl_budget,
        }
        if self.spec.source and Path(self.spec.source).is_file():
            entry["spec"] = describe_input(self.spec.source)
        if self.heads_path:
            entry["heads"] = describe_input(self.heads_path)
        return entry


def is_personality(reference: str) -> bool:
    """Whether ``reference`` names a personality spec rather than a reward model."""
    spec = reference.split("@", 1)[0]
    return spec.startswith(PERSONALITY_PREFIX) or spec.endswith((".yaml", ".yml"))


def load_reward(reference: str, policy_tokenizer, device="cpu") -> RewardFunction:
    """The reward named by ``reference``: ``personality:NAME[@RM_DIR]``, ``SPEC.yaml[@RM_DIR]``
    or a reward model (directory, hub id, ``tiny``).

    Example::

        load_reward("personality:warm-and-polite", policy.tokenizer)
        load_reward("runs/rm/model", policy.tokenizer)
    """
    if not reference:
        raise InputError("--reward: expected a reward model directory or personality:NAME")
    if is_personality(reference):
        spec, _, heads = reference.partition("@")
        spec = spec.removeprefix(PERSONALITY_PREFIX)
        return PersonalityReward(spec, policy_tokenizer, device, heads=heads or None)
    return RewardModelReward(reference, policy_tokenizer, device)


def value_model_init(reward: RewardFunction, value_init: str | None, policy: str):
    """The model the value model starts from: ``value_init`` when given, else the reward
    model itself (checklist point 10), else (a personality reward has no model to copy) the
    policy's body with a fresh scalar head."""
    from rlhfkit.models.heads import load_reward_model

    if value_init is None and isinstance(reward, RewardModelReward):
        model = copy.deepcopy(reward.rm.model)
    else:
        model = load_reward_model(value_init or policy).model
    # the copy of the (frozen) reward model must itself be trained
    return model.requires_grad_(True)


@torch.no_grad()
def rollout_raw(reward: RewardFunction, prompts, gen, device) -> torch.Tensor:
    """Raw scores ``(b,)`` of a :class:`~rlhfkit.models.Generation` of ``prompts``."""
    return reward.raw(prompts, gen.texts, *gen.rows(device))


def fit_reward(reward: RewardFunction, prompts, gen, device) -> None:
    """Let a reward fit what it derives from the starting policy's own replies (a personality
    spec's per-term spreads) before anything is scored; rewards without a ``fit`` need none."""
    fit = getattr(reward, "fit", None)
    if fit is not None:
        fit(prompts, gen.texts, *gen.rows(device))


def fit_normalization(reward: RewardFunction, policy, prompts, n_samples: int, cfg, device):
    """Normalise the reward so the starting policy's own responses score mean 0, std 1
    (checklist point 7): sample ``n_samples`` prompts, generate as in training, store offset and
    scale in ``reward.normalization``. ``cfg`` needs seed, max_new_tokens, temperature,
    max_prompt_length."""
    from rlhfkit.models import generate

    sample = random.Random(cfg.seed).sample(prompts, min(n_samples, len(prompts)))
    gen = generate(
        policy,
        sample,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        max_prompt_tokens=cfg.max_prompt_length,
        seed=cfg.seed,
    )
    fit_reward(reward, sample, gen, device)
    raw = rollout_raw(reward, sample, gen, device)
    norm = reward.normalization
    norm["offset"] = [raw.mean().item()]
    norm["scale"] = [max(raw.std().item(), 1e-6) if raw.numel() > 1 else 1.0]


@torch.no_grad()
def evaluate_policy(policy, reward: RewardFunction, cfg, device) -> dict:
    """Mean normalised reward, length and EOS share of greedy replies to held-out prompts, and
    the replies themselves (in prompt order, so other scorers can judge the same texts).
    ``cfg`` needs eval_prompts, eval_samples, max_new_tokens, max_prompt_length."""
    from rlhfkit.models import generate
    from rlhfkit.train.base import read_prompts

    prompts = read_prompts(cfg.eval_prompts)[: cfg.eval_samples]
    gen = generate(
        policy,
        prompts,
        max_new_tokens=cfg.max_new_tokens,
        temperature=0.0,
        max_prompt_tokens=cfg.max_prompt_length,
    )
    scores = normalize_raw(rollout_raw(reward, prompts, gen, device), reward.normalization)
    # replies that ended keep their score; only the cut-off ones are scored again, with an EOS
    scores_ended = scores.clone()
    cut = (~gen.has_eos).nonzero(as_tuple=True)[0].tolist()
    if cut:
        ids, attn = gen.ended_rows(policy.tokenizer.eos_token_id, device)
        raw = reward.raw(
            [prompts[i] for i in cut], [gen.texts[i] for i in cut], ids[cut], attn[cut]
        )
        scores_ended[cut] = normalize_raw(raw, reward.normalization)
    return {
        "reward": round(scores.mean().item(), 4),
        "reward_sem": round((scores.std() / max(len(scores), 1) ** 0.5).item(), 4),
        "length": round(gen.response_mask.sum(-1).float().mean().item(), 2),
        "eos_share": round(gen.has_eos.float().mean().item(), 3),
        "n": len(prompts),
        "samples": [
            {"prompt": p[-1]["content"][:200], "reply": t[:300]}
            for p, t in zip(prompts[:3], gen.texts[:3], strict=False)
        ],
        "replies": list(gen.texts),
        # per reply, in prompt order: before and after can then be compared pair by pair
        "scores": [round(x, 4) for x in scores.tolist()],
        "has_eos": [bool(x) for x in gen.has_eos.tolist()],
        # the same replies scored as if each had ended (EOS after the cut-off ones): does the
        # reward rise for more than ending within max_new_tokens? (A reward that reads only the
        # text, as most personality terms do, gives the same scores as above.)
        "scores_if_ended": [round(x, 4) for x in scores_ended.tolist()],
    }


def begin_rl_run(kind: str, cfg, run, accelerator, reward: RewardFunction, policy, prompts, device):
    """The start of a PPO or RLOO run: resume from the last checkpoint (its step, reward
    normalisation and the metrics up to it) or fit the reward normalisation on the starting
    policy's own samples (checklist point 7); write provenance; on a fresh start with
    ``--eval-prompts``, the held-out reward before training.

    Returns ``(start_step, checkpoint_state or None, evaluation)``."""
    from rlhfkit.train.run import describe_input, load_checkpoint

    start = 0
    state = load_checkpoint(accelerator, run) if cfg.resume else None
    if state is not None:
        start = state["step"]
        reward.normalization = state["reward_norm"]
        run.truncate_metrics(start)
    elif cfg.normalize_samples:
        fit_normalization(reward, policy, prompts, cfg.normalize_samples, cfg, device)
    run.write_provenance(
        kind=kind,
        inputs={
            "policy": describe_input(cfg.policy),
            "reward": reward.provenance(),
            "prompts": describe_input(cfg.prompts),
        },
        extra={"prompts": len(prompts), "reward_normalization": reward.normalization},
    )
    evaluation = {}
    if cfg.eval_prompts and start == 0 and accelerator.is_main_process:
        evaluation["before"] = evaluate_policy(policy, reward, cfg, device)
    return start, state, evaluation
