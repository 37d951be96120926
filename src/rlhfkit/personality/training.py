"""Train a personality: the spec's composite reward, optimised by PPO or by DPO.

- ``ppo``: PPO with the spec as its reward (:class:`rlhfkit.train.rewards.PersonalityReward`)
  and the spec's KL budget as the adaptive-KL target.
- ``dpo``: the composite reward ranks replies instead of people: sample ``--samples`` replies
  per prompt from the starting policy, keep the best and the worst as a pair (``rater_id``
  ``personality:NAME``, margin = the reward difference; equal rewards give no pair), write the
  pairs to ``pairs.jsonl`` in the run directory, then run the DPO trainer on them.

Either way the run directory also gets ``personality.json`` (the spec, the method, the starting
policy), which ``rlhfkit personality compare`` reads to label the run.

Example::

    from rlhfkit.personality.training import Config, train_personality
    run = train_personality(Config(spec="concise", policy="runs/sft/model",
                                   prompts="prompts.jsonl", method="dpo"))
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from rlhfkit.data.records import PreferencePair
from rlhfkit.errors import InputError
from rlhfkit.personality.spec import DEFAULT_SPEC, load_spec
from rlhfkit.train.rewards import PERSONALITY_PREFIX


@dataclass
class Config:
    """Train a policy towards a personality spec."""

    spec: str = DEFAULT_SPEC
    """Built-in spec name (concise, warm-and-polite, ...) or a spec YAML file."""
    policy: str = "default"
    """Starting policy (usually the SFT model): default, tiny, a model directory or hub id."""
    prompts: str = ""
    """Training prompts: any supported data file (responses in it are ignored)."""
    method: Literal["ppo", "dpo"] = "ppo"
    """ppo (the composite reward is PPO's reward) or dpo (pairs ranked by the composite)."""
    heads: str | None = None
    """Reward model directory that scores the spec's head:LABEL terms (needed only for those)."""
    out: Path | None = None
    """Run directory (default: runs/personality-SPEC-METHOD)."""
    steps: int = 20
    """Optimizer steps (PPO iterations or DPO steps)."""
    batch_size: int = 8
    """Rollouts per PPO iteration, or pairs per DPO step."""
    lr: float = 1e-5
    """Peak learning rate."""
    max_new_tokens: int = 48
    """Longest reply in tokens."""
    samples: int = 4
    """dpo: replies sampled per prompt (the best and the worst become a pair); at least 2."""
    pair_prompts: int = 64
    """dpo: how many prompts to sample replies for."""
    temperature: float = 1.0
    """dpo: sampling temperature of the candidate replies."""
    beta: float = 0.1
    """dpo: strength of the KL constraint to the starting policy."""
    rpo_alpha: float = 0.0
    """dpo: weight of the chosen replies' likelihood per token (RPO; 0 = plain DPO). Makes
    DPO raise the best replies' likelihood, not only lower the worst ones'."""
    lora: bool = False
    """Train LoRA adapters instead of all weights."""
    seed: int = 0
    """Seed for prompt order and sampling."""


def reward_reference(spec: str, heads: str | None) -> str:
    """The ``--reward`` string PPO takes for a spec (``personality:NAME[@RM_DIR]``)."""
    path = Path(spec)
    ref = spec if path.suffix in (".yaml", ".yml") else PERSONALITY_PREFIX + spec
    return f"{ref}@{heads}" if heads else ref


KL_HORIZON_FRACTION = 0.1
"""The adaptive KL controller's horizon, as a share of the run's rollouts."""


def kl_horizon(steps: int, batch_size: int) -> int:
    """The adaptive KL controller's horizon for a run of ``steps`` x ``batch_size`` rollouts: a
    tenth of them, so that the spec's budget binds within the run.

    The controller moves its coefficient by at most 20 % of the error per horizon's worth of
    rollouts: over a whole run at most a factor ``exp(0.2 * rollouts / horizon)``. PPO's fixed
    horizon of 10,000 allowed a factor of 1.004 over 24 steps of 8 (0.4 %), so the concise run
    spent a KL of 15.8 against its budget of 6 (docs/personality.md, "Third run"); a tenth
    allows up to 7.4.

    >>> kl_horizon(24, 8)
    19
    """
    return max(batch_size, int(steps * batch_size * KL_HORIZON_FRACTION))


def train_personality(cfg: Config) -> Path:
    """Train ``cfg.policy`` towards ``cfg.spec``; returns the run directory (``model/`` is the
    trained policy). Example in the module docstring."""
    spec = load_spec(cfg.spec)  # an unknown spec fails before any model is loaded
    if not cfg.prompts:
        raise InputError("--prompts: a prompts file is required")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise InputError("--steps and --batch-size must be at least 1")
    out = Path(cfg.out or Path("runs") / f"personality-{spec.name}-{cfg.method}")
    if cfg.method == "ppo":
        run = _train_ppo(cfg, spec, out)
    elif cfg.method == "dpo":
        run = _train_dpo(cfg, spec, out)
    else:
        raise InputError(f"--method: expected ppo or dpo, got {cfg.method!r}")
    record = {
        "personality": spec.name,
        "description": spec.description,
        "weights": spec.weights,
        "kl_budget": spec.kl_budget,
        "spec": spec.source,
        "method": cfg.method,
        "policy": cfg.policy,
        "prompts": cfg.prompts,
    }
    (run / "personality.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return run


def _train_ppo(cfg: Config, spec, out: Path) -> Path:
    from rlhfkit.train import ppo

    return ppo.train(
        ppo.Config(
            policy=cfg.policy,
            reward=reward_reference(cfg.spec, cfg.heads),
            prompts=cfg.prompts,
            out=out,
            max_steps=cfg.steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            max_new_tokens=cfg.max_new_tokens,
            # the spec's KL budget is what training may spend to reach the personality
            adaptive_kl=True,
            target_kl=spec.kl_budget,
            kl_horizon=kl_horizon(cfg.steps, cfg.batch_size),
            # The spec's scores are the whole reward: PPO's fixed score for replies that do not
            # end within max_new_tokens would replace them for most replies of a small model
            # (a flat -1 teaches nothing) and reward brevity in every personality alike.
            missing_eos_penalty=None,
            normalize_samples=min(32, max(cfg.batch_size, 2)),
            lora=cfg.lora,
            seed=cfg.seed,
            save_every=0,
        )
    )


def _train_dpo(cfg: Config, spec, out: Path) -> Path:
    if importlib.util.find_spec("rlhfkit.train.dpo") is None:
        raise InputError("--method dpo: this installation has no DPO trainer (rlhfkit.train.dpo)")
    from rlhfkit.train import dpo

    if cfg.samples < 2:
        raise InputError(f"--samples: at least 2 replies per prompt are needed, got {cfg.samples}")
    if (out / "metrics.jsonl").exists():
        raise InputError(f"{out}: a run already exists here; choose another --out")
    config = dpo.Config(
        model=cfg.policy,
        data=str(out / "pairs.jsonl"),
        out=out,
        max_steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        beta=cfg.beta,
        rpo_alpha=cfg.rpo_alpha,
        lora=cfg.lora,
        seed=cfg.seed,
        save_every=0,
    )
    dpo.check_config(config)  # the trainer's own checks, before the sampling (the costly part)
    pairs = rank_pairs(cfg, spec)
    if len(pairs) < cfg.batch_size:
        raise InputError(
            f"only {len(pairs)} prompts gave replies with different rewards, fewer than"
            f" --batch-size {cfg.batch_size}; raise --pair-prompts or --samples"
        )
    from rlhfkit.data import write_preferences_jsonl

    out.mkdir(parents=True, exist_ok=True)
    write_preferences_jsonl(pairs, out / "pairs.jsonl")
    return dpo.train(config)


_RANKING_SAMPLES: dict[tuple, object] = {}
"""The last replies :func:`rank_pairs` sampled, by what determines them."""


def _policy_identity(policy: str) -> tuple:
    """A policy reference and, for a directory, its files' sizes and times (a policy retrained
    in place is another policy)."""
    path = Path(policy)
    if not path.is_dir():
        return (policy,)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return (str(path.resolve()), *((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@torch.no_grad()
def rank_pairs(cfg: Config, spec) -> list[PreferencePair]:
    """Sample ``cfg.samples`` replies for each of ``cfg.pair_prompts`` prompts and pair the
    composite reward's best with its worst (prompts whose replies all score the same give none).
    """
    import random

    from rlhfkit.models import generate, load_policy
    from rlhfkit.train.base import read_prompts
    from rlhfkit.train.rewards import fit_reward, load_reward, rollout_raw

    prompts = read_prompts(cfg.prompts)
    prompts = random.Random(cfg.seed).sample(prompts, min(cfg.pair_prompts, len(prompts)))
    policy = load_policy(cfg.policy, seed=cfg.seed)
    reward = load_reward(reward_reference(cfg.spec, cfg.heads), policy.tokenizer)
    repeated = [p for p in prompts for _ in range(cfg.samples)]
    # Two specs ranked from the same start sample the very same replies (same policy, prompts
    # and seed): sample once per process, the costliest step of DPO on ranked pairs.
    key = (_policy_identity(cfg.policy), json.dumps(prompts, sort_keys=True), cfg.samples,
           cfg.max_new_tokens, cfg.temperature, cfg.seed)  # fmt: skip
    gen = _RANKING_SAMPLES.get(key)
    if gen is None:
        gen = generate(
            policy,
            repeated,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            seed=cfg.seed,
            progress=len(repeated) > 64,
        )
        _RANKING_SAMPLES.clear()
        _RANKING_SAMPLES[key] = gen
    fit_reward(reward, repeated, gen, "cpu")  # the spreads of these very replies
    rewards = rollout_raw(reward, repeated, gen, "cpu").view(len(prompts), cfg.samples)
    pairs = []
    for i, prompt in enumerate(prompts):
        row = rewards[i]  # (samples,)
        best, worst = int(row.argmax()), int(row.argmin())
        margin = float(row[best] - row[worst])
        if margin <= 0.0:
            continue
        texts = gen.texts[i * cfg.samples : (i + 1) * cfg.samples]
        pairs.append(
            PreferencePair(
                prompt=prompt,
                chosen=texts[best],
                rejected=texts[worst],
                rater_id=f"personality:{spec.name}",
                margin=round(margin, 6),
                item_id=str(i),
                source=cfg.prompts,
                meta={"rewards": [round(float(x), 6) for x in row], "policy": cfg.policy},
            )
        )
    return pairs
