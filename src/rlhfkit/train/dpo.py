"""Direct preference optimisation (Rafailov et al. 2023), with the IPO loss as an option.

Example::

    from rlhfkit.train.dpo import Config, train
    train(Config(model="runs/sft/model", data="pairs.jsonl", out="runs/dpo", eval_fraction=0.1))

Read top to bottom:

1. data: pairs encoded once (prompt cut from the left so both responses fit); ties dropped
2. model, then the reference log-probs: one pass over every pair with the starting model before
   the first update, cached in the run directory (``reference_logps.pt``). No reference model
   stays in memory and none runs during training; under ``--lora`` this is the same as the
   adapters-disabled reference because the adapters start at zero
3. loop: chosen and rejected of a micro-batch in one forward pass (logits only on response
   tokens), length-grouped global batches, loss normalised by the global number of pairs
4. held-out implicit-reward accuracy every ``--eval-every`` steps and at the end; save
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from rlhfkit.data import read_preferences
from rlhfkit.errors import InputError
from rlhfkit.models import load_policy
from rlhfkit.models.packing import Document, pack
from rlhfkit.train.base import (
    GlobalBatchSampler,
    SelectiveLM,
    TrainConfig,
    apply_lora,
    derive_batches,
    disable_dropout,
    length_batches,
    make_accelerator,
    make_optimizer,
    prepare,
    score_in_shares,
    total_steps,
)
from rlhfkit.train.common import seed_everything
from rlhfkit.train.losses import dpo_loss
from rlhfkit.train.reward import EncodedPair, encode_pair, split_holdout
from rlhfkit.train.run import Run, describe_input, load_checkpoint, rater_summary, save_checkpoint

REFERENCE_CACHE = "reference_logps.pt"


@dataclass
class Config(TrainConfig):
    """Direct preference optimisation."""

    model: str = "default"
    """Policy to optimise (usually the SFT model); its starting weights are the reference."""
    data: str = ""
    """Preference pairs: any supported file (TRL, HH-RLHF, OASST, PandaLM, ...)."""
    format: str | None = None
    """Data format (auto-detected when omitted)."""
    out: Path = Path("runs/dpo")
    """Run directory to write."""
    lr: float = 1e-6
    """Peak learning rate."""
    beta: float = 0.1
    """Strength of the KL constraint to the reference (the implicit reward's scale)."""
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid"
    """sigmoid (DPO) or ipo (Azar et al.; on length-averaged log-probs, as in the paper)."""
    label_smoothing: float = 0.0
    """Share of labels assumed flipped (conservative DPO, sigmoid only), in [0, 0.5)."""
    rpo_alpha: float = 0.0
    """Weight of the chosen replies' negative log-likelihood per token, added to each pair's
    loss (RPO, Pang et al. 2024; TRL's ``rpo_alpha``, which suggests 1.0). DPO alone can win by
    lowering the rejected reply's likelihood without raising the chosen one's; this term makes
    it raise the chosen. 0 = plain DPO."""
    eval_fraction: float = 0.0
    """Hold out this share of pairs (deterministically) and report implicit-reward accuracy."""
    eval_every: int = 0
    """Evaluate the held-out pairs every N steps as well as at the end (0 = end only)."""


def check_config(cfg: Config) -> None:
    """Reject bad values before any model is loaded; messages name the flag."""
    if not cfg.data:
        raise InputError("--data: a preference file is required")
    if not cfg.beta > 0:  # nan too
        raise InputError(f"--beta: expected a positive number, got {cfg.beta}")
    if not 0.0 <= cfg.label_smoothing < 0.5:
        raise InputError(f"--label-smoothing: expected 0 <= value < 0.5, got {cfg.label_smoothing}")
    if cfg.loss_type == "ipo" and cfg.label_smoothing:
        raise InputError("--label-smoothing: IPO has no label smoothing; leave it at 0")
    if not (math.isfinite(cfg.rpo_alpha) and cfg.rpo_alpha >= 0):
        raise InputError(f"--rpo-alpha: expected a number >= 0, got {cfg.rpo_alpha}")
    if not 0.0 <= cfg.eval_fraction < 1.0:
        raise InputError(f"--eval-fraction: expected 0 <= value < 1, got {cfg.eval_fraction}")


def documents_logps(
    model, documents: list[Document], pad_id: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of every continuation of the packed ``documents`` given its prefix,
    all in ONE forward pass of a :class:`SelectiveLM` (no padding computed).

    Returns ``(logps, counts)``, each ``(n_sequences,)`` in document then continuation order:
    the sums and the number of tokens summed.
    """
    batch = pack(documents, pad_id).to(device)
    logits = model(batch)  # (n_targets, vocab)
    token_logps = -F.cross_entropy(logits.float(), batch.targets, reduction="none")
    counts = batch.per_sequence_sum(torch.ones_like(token_logps))
    return batch.per_sequence_sum(token_logps), counts


def response_logps(
    model, sequences: list[list[int]], n_prompt: list[int], pad_id: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the response part of each sequence (tokens after its first
    ``n_prompt``) and the number of response tokens, each ``(n,)``."""
    docs = [Document(s[:p], [s[p:]]) for s, p in zip(sequences, n_prompt, strict=True)]
    return documents_logps(model, docs, pad_id, device)


def pair_logps(model, pairs: list[EncodedPair], pad_id: int, device, ipo: bool):
    """(chosen, rejected) response log-probs of every pair, both sides in one forward pass
    after one copy of their prompt; length-averaged for IPO. A third tensor holds the chosen
    replies' mean log-prob per token (for RPO's likelihood term)."""
    docs = [Document(p.prompt, [p.chosen, p.rejected]) for p in pairs]
    logps, counts = documents_logps(model, docs, pad_id, device)  # chosen0, rejected0, ...
    per_token = logps / counts.clamp(min=1)
    if ipo:
        logps = per_token
    return logps[0::2], logps[1::2], per_token[0::2]


@torch.no_grad()
def reference_logps(
    model, pairs: list[EncodedPair], pad_id: int, accelerator, ipo: bool, chunk: int = 8
) -> torch.Tensor:
    """(n, 2) chosen/rejected log-probs of every pair under ``model`` (the starting policy),
    each process scoring a share, gathered so every process holds all of them."""

    def score(idx: list[int]) -> torch.Tensor:
        c, r, _ = pair_logps(model, [pairs[i] for i in idx], pad_id, accelerator.device, ipo)
        return torch.stack([c, r], dim=-1)

    out = score_in_shares(model, len(pairs), lambda i: len(pairs[i]), score, accelerator, chunk)
    return out.reshape(len(pairs), 2)


@torch.no_grad()
def evaluate(model, pairs, ref: torch.Tensor, cfg: Config, pad_id: int, device) -> dict:
    """Implicit-reward accuracy, margin and mean rewards on held-out pairs."""
    was = model.training
    model.eval()
    c, r = torch.zeros(len(pairs)), torch.zeros(len(pairs))
    for idx in length_batches([len(p) for p in pairs], 8):
        pc, pr, _ = pair_logps(
            model, [pairs[i] for i in idx], pad_id, device, cfg.loss_type == "ipo"
        )
        c[idx] = cfg.beta * (pc.float().cpu() - ref[idx, 0])
        r[idx] = cfg.beta * (pr.float().cpu() - ref[idx, 1])
    model.train(was)
    return {
        "eval/accuracy": (c > r).float().mean().item(),
        "eval/margin": (c - r).mean().item(),
        "eval/reward_chosen": c.mean().item(),
        "eval/reward_rejected": r.mean().item(),
        "eval/pairs": len(pairs),
    }


def train(cfg: Config) -> Path:
    """Optimise ``cfg.model`` on the pairs in ``cfg.data``; returns the run directory."""
    check_config(cfg)
    accelerator = make_accelerator(cfg)
    batches = derive_batches(cfg.batch_size, cfg.grad_accum, accelerator.num_processes)
    seed_everything(cfg.seed)
    ipo = cfg.loss_type == "ipo"

    # 1. data (read and checked before the run directory is touched)
    pairs = read_preferences(cfg.data, cfg.format)
    judged = [p for p in pairs if not p.tie]
    train_pairs, held_pairs = split_holdout(judged, cfg.eval_fraction, cfg.seed)
    if not train_pairs:
        raise InputError(f"{cfg.data}: no preference pairs to train on (ties are skipped)")
    run = Run(cfg.out, cfg, is_main=accelerator.is_main_process, resume=cfg.resume)
    policy = load_policy(cfg.model, seed=cfg.seed)
    tok = policy.tokenizer
    encoded = [encode_pair(tok, p, cfg.max_length, []) for p in train_pairs]
    held = [encode_pair(tok, p, cfg.max_length, []) for p in held_pairs]
    sampler = GlobalBatchSampler([len(e) for e in encoded], batches, cfg.seed, cfg.group_by_length)
    steps = total_steps(len(encoded), cfg)

    # 2. model and the cached reference log-probs
    lm = policy.model
    disable_dropout(lm)
    if cfg.lora:
        lm = apply_lora(lm, cfg)
    lm.train()
    model = SelectiveLM(lm)
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    model, optimizer, scheduler = prepare(accelerator, model, optimizer, scheduler)
    inner = accelerator.unwrap_model(model)
    cache = run.dir / REFERENCE_CACHE
    if cfg.resume and cache.exists():
        ref = torch.load(cache)
        ref_train, ref_held = ref["train"], ref["heldout"]
        if (len(ref_train), len(ref_held)) != (len(encoded), len(held)):
            raise InputError(f"{cache}: made for other data; resume with the run's own --data")
    else:
        # before any update, so the policy is still the reference
        ref_train = reference_logps(inner, encoded, tok.pad_token_id, accelerator, ipo)
        ref_held = reference_logps(inner, held, tok.pad_token_id, accelerator, ipo)
        if accelerator.is_main_process:
            torch.save({"train": ref_train, "heldout": ref_held}, cache)
    start = 0
    if cfg.resume and (state := load_checkpoint(accelerator, run)) is not None:
        start = state["step"]
        run.truncate_metrics(start)
    run.write_provenance(
        kind="dpo",
        inputs={
            "model": describe_input(policy.path or cfg.model),
            "data": describe_input(cfg.data),
        },
        extra={
            "pairs": len(pairs),
            "ties_skipped": len(pairs) - len(judged),
            "train_pairs": len(train_pairs),
            "heldout_pairs": len(held_pairs),
            "raters": rater_summary(pairs),
        },
    )

    # 3. loop
    device = accelerator.device
    ref_train = ref_train.to(device)
    metrics: dict = {}
    for step in range(start, steps):
        micro = sampler.micro_batches(step, accelerator.process_index)
        n_pairs = batches.global_batch
        # sums over this process's pairs: loss, chosen/rejected rewards, correct, logps, and
        # the chosen replies' negative log-likelihood per token
        sums = torch.zeros(7, device=device)
        for k, items in enumerate(micro):
            chunk = [encoded[i] for i in items]
            rows = torch.tensor(items, device=device)
            with accelerator.no_sync(model) if k < len(micro) - 1 else nullcontext():
                pc, pr, token_c = pair_logps(model, chunk, tok.pad_token_id, device, ipo)
                ref_c, ref_r = ref_train[rows, 0], ref_train[rows, 1]
                losses, rc, rr = dpo_loss(
                    pc, pr, ref_c, ref_r, cfg.beta, cfg.loss_type, cfg.label_smoothing
                )
                if cfg.rpo_alpha:
                    losses = losses - cfg.rpo_alpha * token_c
                # DDP averages gradients over processes: scale so the result is the global mean
                accelerator.backward(losses.sum() / n_pairs * accelerator.num_processes)
            sums += torch.stack(
                [
                    losses.detach().sum(),
                    rc.sum(),
                    rr.sum(),
                    (rc > rr).float().sum(),
                    pc.detach().sum(),
                    pr.detach().sum(),
                    -token_c.detach().sum(),
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
        loss, chosen, rejected, correct, logp_c, logp_r, nll = (
            accelerator.reduce(sums, reduction="sum") / n_pairs
        ).tolist()
        metrics = {
            "train/loss": loss,
            "rewards/chosen": chosen,
            "rewards/rejected": rejected,
            "rewards/margins": chosen - rejected,
            "rewards/accuracies": correct,
            "logps/chosen": logp_c,
            "logps/rejected": logp_r,
            "train/nll_chosen": nll,
            "train/grad_norm": float(grad_norm),
            "train/lr": scheduler.get_last_lr()[0],
        }
        last = step + 1 == steps
        if held and (last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0)):
            # 4. held-out implicit-reward accuracy (every process computes it: cheap and keeps
            # them in step)
            metrics.update(evaluate(inner, held, ref_held, cfg, tok.pad_token_id, device))
        run.log(step + 1, metrics)
        if (step + 1) % cfg.log_every == 0 or last:
            run.progress(step + 1, steps, metrics, keys=("train/loss", "rewards/accuracies"))
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and not last:
            save_checkpoint(accelerator, run, step + 1, {})

    # 4. save
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and held:
        final = {k.removeprefix("eval/"): v for k, v in metrics.items() if k.startswith("eval/")}
        (run.dir / "eval.json").write_text(json.dumps({"heldout": final}, indent=2))
    run.save_model(inner.lm, tok)
    run.close()
    return run.dir
