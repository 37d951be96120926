"""PPO against a reward model with a per-token KL penalty to the reference policy.

Every point of docs/ppo-checklist.md, read top to bottom. One iteration:

1. generate: sample responses at temperature T (left-padded prompts, KV cache), cut after EOS
2. score: the reward function (a reward model on the final real token, or a personality's
   composite reward, see rlhfkit.train.rewards); responses without EOS get a fixed penalty score
3. log-probs of policy and reference (logits divided by T), values from the value model
4. rewards: -kl_coef * (logp - ref_logp) on every response token, the score on the last one
5. advantages: GAE (gamma 1, lambda 0.95), whitened over valid tokens
6. update: several epochs over minibatches; clipped policy and value losses

Example::

    from rlhfkit.train.ppo import Config, train
    train(Config(policy="runs/sft/model", reward="runs/rm/model", prompts="prompts.jsonl"))
    train(Config(policy="runs/sft/model", reward="personality:concise", prompts="prompts.jsonl"))
"""

from __future__ import annotations

import json
import random
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.errors import InputError
from rlhfkit.models import Policy, generate, load_policy
from rlhfkit.models.heads import ValueModel
from rlhfkit.models.packing import Document, Packed, pack
from rlhfkit.train.base import (
    Reference,
    RolloutConfig,
    SelectiveLM,
    derive_batches,
    disable_dropout,
    freeze_bottom,
    make_accelerator,
    make_optimizer,
    prepare,
    read_prompts,
    trainable_with_reference,
)
from rlhfkit.train.common import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    exact_div,
    gae,
    masked_mean,
    masked_whiten,
    per_token_kl_rewards,
    rollout_documents,
    scatter_response,
    seed_everything,
)
from rlhfkit.train.losses import ppo_policy_loss, ppo_value_loss
from rlhfkit.train.rewards import (
    RewardFunction,
    begin_rl_run,
    evaluate_policy,
    load_reward,
    normalize_raw,
    rollout_raw,
    value_model_init,
)
from rlhfkit.train.run import Run, save_checkpoint


@dataclass
class Config(RolloutConfig):
    """PPO with a KL penalty (InstructGPT-style RLHF)."""

    value_init: str | None = None
    """Model the value model starts from (default: the reward model; with a personality reward,
    the policy's body with a fresh head)."""
    value_freeze_layers: int = 0
    """Freeze the value model's embeddings and this many bottom transformer layers (0 = train
    all of it). Backward then stops at the first trainable block: with a reward model trained
    with --freeze-layers N, the same N keeps the value model's features those of the reward."""
    out: Path = Path("runs/ppo")
    """Run directory to write."""
    lr: float = 1e-6
    """Peak learning rate (policy and value model)."""
    max_steps: int = 20
    """PPO iterations (each: --batch-size rollouts, then the updates)."""
    batch_size: int = 8
    """Rollouts per iteration (global)."""
    num_minibatches: int = 1
    """Minibatches per PPO epoch (batch/num_minibatches per update)."""
    ppo_epochs: int = 2
    """Passes over each rollout batch."""
    kl_coef: float = 0.05
    """KL penalty coefficient beta (initial value when adaptive)."""
    adaptive_kl: bool = False
    """Adapt beta towards --target-kl (Ziegler et al.)."""
    target_kl: float = 6.0
    """Target KL (nats per sequence) for the adaptive controller."""
    kl_horizon: int = 10000
    """Horizon of the adaptive controller, in samples."""
    gamma: float = 1.0
    """Discount."""
    lam: float = 0.95
    """GAE lambda."""
    cliprange: float = 0.2
    """Policy ratio clip."""
    cliprange_value: float = 0.2
    """Value clip."""
    vf_coef: float = 0.1
    """Value loss coefficient."""
    save_every: int = 0
    """Checkpoint every N iterations (0 = only at the end)."""


class PolicyAndValue(torch.nn.Module):
    """Policy and value model under one module, so one DDP wrapper syncs both."""

    def __init__(self, policy: SelectiveLM, value: ValueModel):
        super().__init__()
        self.policy = policy
        self.value = value

    def forward(self, batch: Packed, with_values: bool = True):
        """Logits and values at the packed batch's ``predict`` positions: the state before
        each response token. ``(n_targets, vocab)`` and ``(n_targets,)``."""
        logits = self.policy(batch)
        values = self.value(batch) if with_values else None
        return logits, values


@dataclass
class Rollout:
    documents: list[Document]  # per row: its real prompt tokens and its response, for packing
    pad_id: int
    response_mask: torch.Tensor  # (b, R) bool
    logprobs: torch.Tensor  # (b, R)
    ref_logprobs: torch.Tensor  # (b, R)
    values: torch.Tensor  # (b, R)
    scores: torch.Tensor  # (b,)
    has_eos: torch.Tensor  # (b,)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T) at targets: (n, vocab), (n,) -> (n,)."""
    logits = logits.float() / temperature
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def train(cfg: Config) -> Path:
    """Run PPO; returns the run directory (model/ is the trained policy)."""
    if not cfg.reward:
        raise InputError("--reward: a reward model directory or personality:NAME is required")
    if not cfg.prompts:
        raise InputError("--prompts: a prompts file is required")
    accelerator = make_accelerator(cfg)
    batches = derive_batches(cfg.batch_size, cfg.grad_accum, accelerator.num_processes)
    minibatch = exact_div(
        batches.per_process, cfg.num_minibatches, "rollouts over --num-minibatches"
    )
    micro = exact_div(minibatch, cfg.grad_accum, "minibatch over --grad-accum")
    seed_everything(cfg.seed + accelerator.process_index)
    run = Run(cfg.out, cfg, is_main=accelerator.is_main_process, resume=cfg.resume)
    device = accelerator.device

    prompts = read_prompts(cfg.prompts, cfg.format)
    policy = load_policy(cfg.policy, seed=cfg.seed)
    tok = policy.tokenizer
    reward = load_reward(cfg.reward, tok, device)

    # models: reference = frozen copy (or the policy with adapters disabled under LoRA);
    # value model initialised from the reward model (checklist point 10) or --value-init
    lm, reference = trainable_with_reference(policy.model, cfg, device)
    value_body = value_model_init(reward, cfg.value_init, cfg.policy)
    freeze_bottom(value_body, cfg.value_freeze_layers, flag="--value-freeze-layers")
    disable_dropout(value_body)
    model = PolicyAndValue(SelectiveLM(lm), ValueModel(value_body))
    model.train()
    optimizer, scheduler = make_optimizer(model, cfg, cfg.max_steps)
    model, optimizer, scheduler = prepare(accelerator, model, optimizer, scheduler)
    kl_ctl = (
        AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
        if cfg.adaptive_kl
        else FixedKLController(cfg.kl_coef)
    )
    inner = accelerator.unwrap_model(model)
    gen_policy = Policy(inner.policy.lm, tok, cfg.policy)
    reference.bind(inner.policy.lm)

    # resume, or reward normalisation on the starting policy's own responses (checklist 7)
    start, state, evaluation = begin_rl_run(
        "ppo", cfg, run, accelerator, reward, gen_policy, prompts, device
    )
    if state is not None:
        kl_ctl.value = state["kl_coef"]

    rng = random.Random(cfg.seed * 7919 + accelerator.process_index)
    for step in range(start, cfg.max_steps):
        # 1. generate (each process its own share of the global batch)
        order = random.Random(cfg.seed * 104_729 + step).sample(
            range(len(prompts)), min(len(prompts), batches.global_batch)
        )
        mine = [prompts[i] for i in order[accelerator.process_index :: accelerator.num_processes]][
            : batches.per_process
        ]
        gen = generate(
            gen_policy,
            mine,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            max_prompt_tokens=cfg.max_prompt_length,
            seed=cfg.seed * 1_000_003 + step * 101 + accelerator.process_index,
        )
        ro = make_rollout(gen, mine, model, reference, reward, cfg, device, micro, tok.pad_token_id)

        # 4. rewards with the KL penalty, 5. advantages
        rewards, kl = per_token_kl_rewards(
            ro.scores, ro.logprobs, ro.ref_logprobs, ro.response_mask, kl_ctl.value
        )
        advantages, returns = gae(rewards, ro.values, ro.response_mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, ro.response_mask)

        # 6. update: epoch 0 in rollout order (so the first ratio is exactly 1), then shuffled
        stats: dict[str, list[float]] = {}
        n = len(ro.documents)
        for epoch in range(cfg.ppo_epochs):
            idx = list(range(n)) if epoch == 0 else rng.sample(range(n), n)
            for mb_start in range(0, n, minibatch):
                mb = idx[mb_start : mb_start + minibatch]
                for k in range(0, minibatch, micro):
                    rows = torch.tensor(mb[k : k + micro], device=device)
                    last_micro = k + micro >= minibatch
                    with accelerator.no_sync(model) if not last_micro else nullcontext():
                        out = ppo_micro_step(model, ro, rows, advantages, returns, cfg)
                        accelerator.backward(out.pop("loss") * micro / minibatch)
                    for key, v in out.items():
                        stats.setdefault(key, []).append(float(v))
                    if epoch == 0 and mb_start == 0 and k == 0:
                        stats["policy/ratio_first"] = [out["policy/ratio_mean"]]
                if cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        scheduler.step()

        mean_kl = masked_mean(kl.sum(-1), torch.ones_like(ro.scores)).item()
        kl_ctl.update(mean_kl, batches.global_batch)
        lengths = ro.response_mask.sum(-1).float()
        metrics = {
            "objective/scores": ro.scores.mean().item(),
            "objective/kl": mean_kl,
            "objective/rlhf_reward": (ro.scores - kl.sum(-1)).mean().item(),
            "objective/kl_coef": kl_ctl.value,
            "response/length": lengths.mean().item(),
            "response/eos_share": ro.has_eos.float().mean().item(),
            **{k: sum(v) / len(v) for k, v in stats.items()},
        }
        metrics = {
            k: accelerator.reduce(torch.tensor(v, device=device), reduction="mean").item()
            for k, v in metrics.items()
        }
        run.log(step + 1, metrics)
        run.progress(
            step + 1,
            cfg.max_steps,
            metrics,
            keys=("objective/scores", "objective/kl", "policy/approxkl"),
        )
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.max_steps:
            save_checkpoint(
                accelerator,
                run,
                step + 1,
                {"kl_coef": kl_ctl.value, "reward_norm": reward.normalization},
            )

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if cfg.eval_prompts:
            evaluation["after"] = evaluate_policy(gen_policy, reward, cfg, device)
            (run.dir / "eval.json").write_text(json.dumps(evaluation, indent=2), encoding="utf-8")
        lm = inner.policy.lm
        run.save_model(lm.merge_and_unload() if cfg.lora else lm, tok)
    run.close()
    return run.dir


@torch.no_grad()
def make_rollout(
    gen,
    prompts,
    model,
    reference: Reference,
    reward: RewardFunction,
    cfg: Config,
    device,
    micro: int,
    pad_id: int,
) -> Rollout:
    """2. score and 3. log-probs/values for a generated batch, in micro-batch chunks identical
    to the first update epoch's (so the recomputed log-probs match bit for bit)."""
    inner = model.module if hasattr(model, "module") else model
    response_mask = gen.response_mask.bool().to(device)  # (b, R)
    documents = rollout_documents(gen)
    b, R = response_mask.shape
    logprobs = torch.zeros((b, R), device=device)
    ref_logprobs = torch.zeros((b, R), device=device)
    values = torch.zeros((b, R), device=device)
    for start in range(0, b, micro):
        sl = slice(start, start + micro)
        batch = pack(documents[sl], pad_id).to(device)
        logits, v = inner(batch)
        logprobs[sl] = scatter_response(
            token_logprobs(logits, batch.targets, cfg.temperature), response_mask[sl]
        )
        values[sl] = scatter_response(v, response_mask[sl])
        ref_logits = reference(batch)
        ref_logprobs[sl] = scatter_response(
            token_logprobs(ref_logits, batch.targets, cfg.temperature), response_mask[sl]
        )
    scores = normalize_raw(rollout_raw(reward, prompts, gen, device), reward.normalization)
    if cfg.reward_clip:
        scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)
    has_eos = gen.has_eos.to(device)
    if cfg.missing_eos_penalty is not None:
        scores = torch.where(has_eos, scores, torch.full_like(scores, cfg.missing_eos_penalty))
    return Rollout(
        documents, pad_id, response_mask, logprobs, ref_logprobs, values, scores, has_eos
    )


def ppo_micro_step(model, ro: Rollout, rows, advantages, returns, cfg: Config) -> dict:
    """Loss and statistics of one micro-batch of the rollout (rows index into it)."""
    mask = ro.response_mask[rows]
    batch = pack([ro.documents[i] for i in rows.tolist()], ro.pad_id).to(mask.device)
    logits, v = model(batch)
    new_logprobs = scatter_response(token_logprobs(logits, batch.targets, cfg.temperature), mask)
    new_values = scatter_response(v, mask)
    pg_loss, pg = ppo_policy_loss(
        new_logprobs, ro.logprobs[rows], advantages[rows], mask, cfg.cliprange
    )
    vf_loss, vf = ppo_value_loss(
        new_values, ro.values[rows], returns[rows], mask, cfg.cliprange_value
    )
    with torch.no_grad():
        entropy = entropy_from_logits(logits, cfg.temperature).mean()
    return {
        "loss": pg_loss + cfg.vf_coef * vf_loss,
        "loss/policy": pg_loss.item(),
        "loss/value": vf_loss.item(),
        "policy/approxkl": pg["approx_kl"].item(),
        "policy/clipfrac": pg["clipfrac"].item(),
        "policy/ratio_mean": pg["ratio_mean"].item(),
        "policy/entropy": entropy.item(),
        "val/clipfrac": vf["clipfrac"].item(),
        "val/error": vf["error"].item(),
    }
