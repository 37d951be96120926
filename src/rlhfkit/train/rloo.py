"""REINFORCE leave-one-out (Ahmadian et al. 2024): k samples per prompt, each sample's baseline
the mean reward of the other k-1; no value model.

Why RLOO rather than GRPO: the leave-one-out baseline is unbiased (a sample never enters its own
baseline) and needs no per-group std, which GRPO divides by and which blows up on groups whose
rewards are nearly equal; and it is the method TRL's ``RLOOTrainer`` implements, so speed and
results compare like for like. (``losses.grpo_advantages`` is there for a GRPO variant.)

Example::

    from rlhfkit.train.rloo import Config, train
    train(Config(policy="runs/sft/model", reward="runs/rm/model", prompts="prompts.jsonl"))

One step, read top to bottom:

1. generate: ``--batch-size / --group-size`` prompts, each sampled ``--group-size`` times at
   temperature T with the same batched, KV-cached generation as PPO; cut after EOS
2. score: normalised reward-model score on the final real token; responses without EOS get
   ``--missing-eos-penalty``
3. reference log-probs (frozen copy, or the policy with LoRA adapters disabled), no gradient
4. per micro-batch of whole groups, one packed forward pass of the policy (each group's prompt
   laid down once, its k responses after it, no padding computed) gives both the log-probs for the gradient and
   (detached) the KL estimate: reward = score - kl_coef * sum_t (logp - ref_logp)
   (the KL as a reward penalty, as in the paper and TRL), leave-one-out advantages within each
   group, loss = -advantage * sum_t logp, normalised by the global number of samples
5. one optimizer step: on-policy, so the log-probs of step 4 are the sampling policy's own
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
from rlhfkit.models.packing import pack
from rlhfkit.train.base import (
    RolloutConfig,
    SelectiveLM,
    derive_batches,
    make_accelerator,
    make_optimizer,
    prepare,
    read_prompts,
    trainable_with_reference,
)
from rlhfkit.train.common import (
    entropy_from_logits,
    exact_div,
    logprobs_from_logits,
    rollout_documents,
    scatter_response,
    seed_everything,
)
from rlhfkit.train.losses import rloo_advantages
from rlhfkit.train.rewards import (
    begin_rl_run,
    evaluate_policy,
    load_reward,
    normalize_raw,
    rollout_raw,
)
from rlhfkit.train.run import Run, save_checkpoint


@dataclass
class Config(RolloutConfig):
    """REINFORCE leave-one-out against a reward model, with a KL penalty."""

    out: Path = Path("runs/rloo")
    """Run directory to write."""
    lr: float = 1e-6
    """Peak learning rate."""
    max_steps: int = 20
    """Optimizer steps (each: generate --batch-size samples, then one update)."""
    batch_size: int = 16
    """Samples per step (global): --batch-size / --group-size prompts, --group-size each."""
    group_size: int = 4
    """Samples per prompt, k >= 2 (each one's baseline is the mean of the other k-1)."""
    kl_coef: float = 0.05
    """KL penalty coefficient beta: reward = score - beta * KL(policy || reference)."""
    save_every: int = 0
    """Checkpoint every N steps (0 = only at the end)."""


def check_config(cfg: Config) -> None:
    """Reject bad values before any model is loaded; messages name the flag."""
    if not cfg.reward:
        raise InputError("--reward: a reward model directory is required")
    if not cfg.prompts:
        raise InputError("--prompts: a prompts file is required")
    if cfg.group_size < 2:
        raise InputError(
            f"--group-size: RLOO needs at least 2 samples per prompt, got {cfg.group_size}"
        )
    if cfg.temperature <= 0:
        raise InputError(
            f"--temperature: sampling needs a positive temperature, got {cfg.temperature}"
        )
    if cfg.kl_coef < 0:
        raise InputError(f"--kl-coef: expected a number >= 0, got {cfg.kl_coef}")
    if cfg.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens: expected at least 1, got {cfg.max_new_tokens}")


def train(cfg: Config) -> Path:
    """Run RLOO; returns the run directory (model/ is the trained policy)."""
    check_config(cfg)
    accelerator = make_accelerator(cfg)
    batches = derive_batches(cfg.batch_size, cfg.grad_accum, accelerator.num_processes)
    k = cfg.group_size
    n_prompts = exact_div(batches.global_batch, k, "--batch-size over --group-size")
    prompts_per_process = exact_div(batches.per_process, k, "per-process samples over --group-size")
    exact_div(batches.micro, k, "micro-batch (batch/(processes*grad-accum)) over --group-size")
    prompts = read_prompts(cfg.prompts, cfg.format)
    if len(prompts) < n_prompts:
        raise InputError(
            f"{cfg.prompts}: {len(prompts)} prompts, fewer than the {n_prompts} a step needs "
            "(--batch-size / --group-size)"
        )
    seed_everything(cfg.seed + accelerator.process_index)
    run = Run(cfg.out, cfg, is_main=accelerator.is_main_process, resume=cfg.resume)
    device = accelerator.device

    policy = load_policy(cfg.policy, seed=cfg.seed)
    tok = policy.tokenizer
    reward = load_reward(cfg.reward, tok, device)

    # models: reference = frozen copy (or the policy with adapters disabled under LoRA)
    lm, reference = trainable_with_reference(policy.model, cfg, device)
    lm.train()
    model = SelectiveLM(lm)
    optimizer, scheduler = make_optimizer(model, cfg, cfg.max_steps)
    model, optimizer, scheduler = prepare(accelerator, model, optimizer, scheduler)
    inner = accelerator.unwrap_model(model)
    gen_policy = Policy(inner.lm, tok, cfg.policy)
    reference.bind(inner.lm)

    start, _, evaluation = begin_rl_run(
        "rloo", cfg, run, accelerator, reward, gen_policy, prompts, device
    )

    for step in range(start, cfg.max_steps):
        # 1. generate: this process's prompts, each repeated k times (groups are contiguous)
        order = random.Random(cfg.seed * 104_729 + step).sample(range(len(prompts)), n_prompts)
        mine = [prompts[i] for i in order[accelerator.process_index :: accelerator.num_processes]]
        assert len(mine) == prompts_per_process
        grouped = [p for p in mine for _ in range(k)]
        gen = generate(
            gen_policy,
            grouped,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            max_prompt_tokens=cfg.max_prompt_length,
            seed=cfg.seed * 1_000_003 + step * 101 + accelerator.process_index,
            batch_size=batches.per_process,
        )
        mask = gen.response_mask.bool().to(device)  # (b, R)
        # the k rows of a group share one prompt: lay it down once, its k responses after it
        documents = rollout_documents(gen, group_size=k)

        # 2. score
        with torch.no_grad():
            scores = normalize_raw(rollout_raw(reward, grouped, gen, device), reward.normalization)
        if cfg.reward_clip:
            scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)
        has_eos = gen.has_eos.to(device)
        if cfg.missing_eos_penalty is not None:
            penalty = torch.full_like(scores, cfg.missing_eos_penalty)
            scores = torch.where(has_eos, scores, penalty)

        # 4-5. per micro-batch of whole groups: log-probs, KL penalty, advantages, update
        sums = torch.zeros(5, device=device)  # loss, kl, rlhf reward, entropy, |advantage|
        micro = batches.micro
        for start_row in range(0, batches.per_process, micro):
            rows = slice(start_row, start_row + micro)
            groups = slice(start_row // k, (start_row + micro) // k)
            batch = pack(documents[groups], tok.pad_token_id).to(device)
            m_mask = mask[rows]  # (m, R)
            # 3. reference log-probs
            ref_logits = reference(batch)  # (n_valid, vocab), no gradient
            ref_logps = logprobs_from_logits(ref_logits, batch.targets, cfg.temperature)
            last = start_row + micro >= batches.per_process
            with accelerator.no_sync(model) if not last else nullcontext():
                logits = model(batch)  # (n_valid, vocab)
                token_logps = logprobs_from_logits(logits, batch.targets, cfg.temperature)
                logps = scatter_response(token_logps, m_mask).sum(-1)  # (m,)
                kl = scatter_response(token_logps.detach() - ref_logps, m_mask).sum(-1)  # (m,)
                rlhf_reward = scores[rows] - cfg.kl_coef * kl
                advantages = rloo_advantages(rlhf_reward.view(-1, k)).view(-1)  # (m,)
                loss = -(advantages * logps).sum()
                # DDP averages gradients over processes: scale so the result is the global mean
                accelerator.backward(loss / batches.global_batch * accelerator.num_processes)
            with torch.no_grad():
                entropy = entropy_from_logits(logits.detach(), cfg.temperature)  # (n_valid,)
                entropy = scatter_response(entropy, m_mask).sum(-1) / m_mask.sum(-1).clamp(min=1)
            sums += torch.stack(
                [
                    loss.detach(),
                    kl.sum(),
                    rlhf_reward.sum(),
                    entropy.sum(),
                    advantages.abs().sum(),
                ]
            )
        grad_norm = (
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            if cfg.max_grad_norm
            else 0.0
        )
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        n = batches.global_batch
        loss, kl, rlhf, entropy, abs_adv = (accelerator.reduce(sums, reduction="sum") / n).tolist()
        local = torch.stack([scores.sum(), mask.sum(-1).float().sum(), has_eos.float().sum()])
        score, length, eos = (accelerator.reduce(local, reduction="sum") / n).tolist()
        metrics = {
            "objective/scores": score,
            "objective/kl": kl,
            "objective/rlhf_reward": rlhf,
            "loss/policy": loss,
            "policy/entropy": entropy,
            "policy/advantage_abs": abs_adv,
            "response/length": length,
            "response/eos_share": eos,
            "train/grad_norm": float(grad_norm),
            "train/lr": scheduler.get_last_lr()[0],
        }
        run.log(step + 1, metrics)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
            run.progress(
                step + 1, cfg.max_steps, metrics, keys=("objective/scores", "objective/kl")
            )
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.max_steps:
            save_checkpoint(accelerator, run, step + 1, {"reward_norm": reward.normalization})

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if cfg.eval_prompts:
            evaluation["after"] = evaluate_policy(gen_policy, reward, cfg, device)
            (run.dir / "eval.json").write_text(json.dumps(evaluation, indent=2), encoding="utf-8")
        run.save_model(inner.lm.merge_and_unload() if cfg.lora else inner.lm, tok)
    run.close()
    return run.dir
