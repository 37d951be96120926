"""Kahneman-Tversky optimisation (Ethayarajh et al. 2024) on unpaired thumbs up / down feedback.

Example::

    from rlhfkit.train.kto import Config, train
    train(Config(model="runs/sft/model", data="feedback.jsonl", out="runs/kto"))

Data is unpaired feedback: ``prompt``, ``completion``, ``label`` (true = desirable). Preference
pairs can be used with ``--split-pairs`` (chosen -> desirable, rejected -> undesirable).

Read top to bottom:

1. data: examples encoded once; each example also gets a *mismatched* partner, its prompt with
   another example's completion (a fixed derangement), for the KL reference point
2. model, then the reference log-probs of matched and mismatched sequences: one pass with the
   starting model before the first update, cached in the run directory (no reference model in
   memory; under ``--lora`` the same as disabling the adapters, which start at zero)
3. loop, per step: (a) the reference point z0 = mean over the global batch of
   log pi(y'|x) - log ref(y'|x) on mismatched pairs, no gradient, clamped at 0, as in the paper
   and TRL; (b) the KTO loss on the matched examples with the desirable/undesirable weights
   balanced from the class counts (lambda_D n_D / lambda_U n_U = --weight-ratio), normalised by
   the global batch size
4. held-out: how well the implicit reward ranks desirable above undesirable (AUC); save
"""

from __future__ import annotations

import json
import random
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.data import read_examples, read_preferences
from rlhfkit.data.formats import PREFERENCES, default_kind, detect_format
from rlhfkit.data.records import Example
from rlhfkit.errors import InputError
from rlhfkit.models import load_policy
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
from rlhfkit.train.dpo import response_logps
from rlhfkit.train.losses import kto_balanced_weights, kto_loss
from rlhfkit.train.reward import split_holdout
from rlhfkit.train.run import Run, describe_input, load_checkpoint, rater_summary, save_checkpoint
from rlhfkit.train.sft import encode_demonstration

REFERENCE_CACHE = "reference_logps.pt"


@dataclass
class Config(TrainConfig):
    """Kahneman-Tversky optimisation on unpaired feedback."""

    model: str = "default"
    """Policy to optimise (usually the SFT model); its starting weights are the reference."""
    data: str = ""
    """Unpaired feedback (prompt, completion, label true/false), or pairs with --split-pairs."""
    format: str | None = None
    """Data format (auto-detected when omitted)."""
    split_pairs: bool = False
    """Read preference pairs and use each as one desirable (chosen) and one undesirable
    (rejected) example; ties are skipped."""
    out: Path = Path("runs/kto")
    """Run directory to write."""
    lr: float = 1e-6
    """Peak learning rate."""
    beta: float = 0.1
    """Strength of the KL constraint to the reference (the implicit reward's scale)."""
    desirable_weight: float | None = None
    """lambda_D; when omitted (and --undesirable-weight too), balanced from the class counts."""
    undesirable_weight: float | None = None
    """lambda_U; when omitted, 1."""
    weight_ratio: float = 1.0
    """Target lambda_D*n_D / (lambda_U*n_U) for balanced weights; the paper advises [1, 4/3]."""
    eval_fraction: float = 0.0
    """Hold out this share of examples (deterministically) and report the implicit reward's
    AUC (desirable ranked above undesirable) on it."""


def check_config(cfg: Config) -> None:
    """Reject bad values before any model is loaded; messages name the flag."""
    if not cfg.data:
        raise InputError("--data: a feedback file (prompt, completion, label) is required")
    if cfg.beta <= 0:
        raise InputError(f"--beta: expected a positive number, got {cfg.beta}")
    for name in ("desirable_weight", "undesirable_weight"):
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise InputError(f"--{name.replace('_', '-')}: expected a positive number, got {value}")
    if not 1.0 <= cfg.weight_ratio <= 4 / 3:
        raise InputError(f"--weight-ratio: expected a value in [1, 4/3], got {cfg.weight_ratio}")
    if not 0.0 <= cfg.eval_fraction < 1.0:
        raise InputError(f"--eval-fraction: expected 0 <= value < 1, got {cfg.eval_fraction}")


def read_feedback(path: str, fmt: str | None = None, split_pairs: bool = False) -> list[Example]:
    """Labelled examples from ``path``; with ``split_pairs``, two examples per preference pair.

    Example::

        read_feedback("pairs.jsonl", split_pairs=True)  # [Example(label=True), Example(False), ...]
    """
    if split_pairs:
        return [
            Example(p.prompt, text, label, p.rater_id, p.labels, p.item_id, p.source)
            for p in read_preferences(path, fmt)
            if not p.tie
            for text, label in ((p.chosen, True), (p.rejected, False))
        ]
    fmt = fmt or detect_format(Path(path))
    if default_kind(Path(path), fmt) == PREFERENCES:
        raise InputError(
            f"{path}: holds preference pairs, not unpaired feedback; pass --split-pairs to use "
            "each pair as one desirable and one undesirable example"
        )
    examples = read_examples(path, fmt)
    for e in examples:
        if e.label is None:
            raise InputError(
                f"{e.source or path}: example has no label; KTO needs label true (desirable) "
                "or false (undesirable) on every record"
            )
    return examples


def mismatched_partners(n: int, seed: int) -> list[int]:
    """A derangement: ``partner[i] != i`` for every i (n >= 2). Example i's KL sequence is its
    prompt with example ``partner[i]``'s completion."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    partner = [0] * n
    for j, i in enumerate(order):
        partner[i] = order[(j + 1) % n]
    return partner


def encode_feedback(tok, examples: list[Example], max_length: int, seed: int):
    """Matched and mismatched ``(ids, n_prompt)`` sequences for every example."""
    partner = mismatched_partners(len(examples), seed)
    matched = [encode_demonstration(tok, e.prompt, e.completion, max_length) for e in examples]
    mismatched = [
        encode_demonstration(tok, e.prompt, examples[partner[i]].completion, max_length)
        for i, e in enumerate(examples)
    ]
    return matched, mismatched


def _logps(model, encoded, pad_id, device) -> torch.Tensor:
    return response_logps(model, [s for s, _ in encoded], [p for _, p in encoded], pad_id, device)[
        0
    ]


def reference_logps(
    model, encoded: list, pad_id: int, accelerator, chunk: int = 16
) -> torch.Tensor:
    """(n,) response log-probs under ``model`` (the starting policy), each process scoring a
    share, gathered so every process holds all of them."""

    def score(idx: list[int]) -> torch.Tensor:
        return _logps(model, [encoded[i] for i in idx], pad_id, accelerator.device)

    n = len(encoded)
    return score_in_shares(model, n, lambda i: len(encoded[i][0]), score, accelerator, chunk)


def reward_auc(rewards: torch.Tensor, labels: torch.Tensor) -> float:
    """Probability that a random desirable example outranks a random undesirable one (ties
    count half); nan when one class is absent."""
    pos, neg = rewards[labels], rewards[~labels]
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    diff = pos.unsqueeze(1) - neg.unsqueeze(0)  # (n_pos, n_neg)
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean().item()


@torch.no_grad()
def evaluate(model, encoded, ref: torch.Tensor, labels: torch.Tensor, beta: float, pad_id, device):
    was = model.training
    model.eval()
    logps = torch.zeros(len(encoded))
    for idx in length_batches([len(ids) for ids, _ in encoded], 16):
        logps[idx] = _logps(model, [encoded[i] for i in idx], pad_id, device).float().cpu()
    model.train(was)
    rewards = beta * (logps - ref)
    return {
        "eval/auc": reward_auc(rewards, labels),
        "eval/reward_desirable": rewards[labels].mean().item(),
        "eval/reward_undesirable": rewards[~labels].mean().item(),
        "eval/examples": len(encoded),
    }


def train(cfg: Config) -> Path:
    """Optimise ``cfg.model`` on the feedback in ``cfg.data``; returns the run directory."""
    check_config(cfg)
    accelerator = make_accelerator(cfg)
    batches = derive_batches(cfg.batch_size, cfg.grad_accum, accelerator.num_processes)
    seed_everything(cfg.seed)

    # 1. data (read and checked before the run directory is touched)
    examples = read_feedback(cfg.data, cfg.format, cfg.split_pairs)
    train_ex, held_ex = split_holdout(examples, cfg.eval_fraction, cfg.seed)
    n_d = sum(e.label for e in train_ex)
    if cfg.desirable_weight is None and cfg.undesirable_weight is None:
        w_d, w_u = kto_balanced_weights(n_d, len(train_ex) - n_d, cfg.weight_ratio)
    else:
        w_d, w_u = cfg.desirable_weight or 1.0, cfg.undesirable_weight or 1.0
    if len(train_ex) < 2:
        raise InputError(f"{cfg.data}: KTO needs at least 2 training examples")
    run = Run(cfg.out, cfg, is_main=accelerator.is_main_process, resume=cfg.resume)
    policy = load_policy(cfg.model, seed=cfg.seed)
    tok, pad = policy.tokenizer, policy.tokenizer.pad_token_id
    matched, mismatched = encode_feedback(tok, train_ex, cfg.max_length, cfg.seed)
    held = [encode_demonstration(tok, e.prompt, e.completion, cfg.max_length) for e in held_ex]
    labels = torch.tensor([bool(e.label) for e in train_ex])
    held_labels = torch.tensor([bool(e.label) for e in held_ex], dtype=torch.bool)
    lengths = [len(a) + len(b) for (a, _), (b, _) in zip(matched, mismatched, strict=True)]
    sampler = GlobalBatchSampler(lengths, batches, cfg.seed, cfg.group_by_length)
    steps = total_steps(len(matched), cfg)

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
        if (len(ref["matched"]), len(ref["heldout"])) != (len(matched), len(held)):
            raise InputError(f"{cache}: made for other data; resume with the run's own --data")
    else:
        # before any update, so the policy is still the reference
        ref = {
            "matched": reference_logps(inner, matched, pad, accelerator),
            "mismatched": reference_logps(inner, mismatched, pad, accelerator),
            "heldout": reference_logps(inner, held, pad, accelerator),
        }
        if accelerator.is_main_process:
            torch.save(ref, cache)
    start = 0
    if cfg.resume and (state := load_checkpoint(accelerator, run)) is not None:
        start = state["step"]
        run.truncate_metrics(start)
    run.write_provenance(
        kind="kto",
        inputs={
            "model": describe_input(policy.path or cfg.model),
            "data": describe_input(cfg.data),
        },
        extra={
            "examples": len(examples),
            "train_desirable": n_d,
            "train_undesirable": len(train_ex) - n_d,
            "heldout_examples": len(held_ex),
            "desirable_weight": w_d,
            "undesirable_weight": w_u,
            "split_pairs": cfg.split_pairs,
            "raters": rater_summary(examples),
        },
    )

    # 3. loop
    device = accelerator.device
    ref_m, ref_kl, labels = (
        ref["matched"].to(device),
        ref["mismatched"].to(device),
        labels.to(device),
    )
    n = batches.global_batch
    metrics: dict = {}
    for step in range(start, steps):
        micro = sampler.micro_batches(step, accelerator.process_index)
        # (a) reference point from the mismatched pairs of the whole global batch, no gradient
        kl_sum = torch.zeros((), device=device)
        with torch.no_grad():
            for items in micro:
                rows = torch.tensor(items, device=device)
                logps = _logps(inner, [mismatched[i] for i in items], pad, device)
                kl_sum += (logps - ref_kl[rows]).sum()
        z0 = (accelerator.reduce(kl_sum, reduction="sum") / n).clamp(min=0)
        # (b) the loss on the matched examples
        # sums over this process's examples: loss, desirable reward, its count, undesirable reward
        sums = torch.zeros(4, device=device)
        for k, items in enumerate(micro):
            rows = torch.tensor(items, device=device)
            with accelerator.no_sync(model) if k < len(micro) - 1 else nullcontext():
                logps = _logps(model, [matched[i] for i in items], pad, device)
                losses, rewards = kto_loss(logps, ref_m[rows], labels[rows], z0, cfg.beta, w_d, w_u)
                # DDP averages gradients over processes: scale so the result is the global mean
                accelerator.backward(losses.sum() / n * accelerator.num_processes)
            good = labels[rows].float()
            sums += torch.stack(
                [
                    losses.detach().sum(),
                    (rewards * good).sum(),
                    good.sum(),
                    (rewards * (1 - good)).sum(),
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
        loss, r_good, n_good, r_bad = accelerator.reduce(sums, reduction="sum").tolist()
        metrics = {
            "train/loss": loss / n,
            "train/kl": z0.item(),
            "rewards/desirable": r_good / n_good if n_good else float("nan"),
            "rewards/undesirable": r_bad / (n - n_good) if n > n_good else float("nan"),
            "train/desirable_share": n_good / n,
            "train/grad_norm": float(grad_norm),
            "train/lr": scheduler.get_last_lr()[0],
        }
        metrics["rewards/margins"] = metrics["rewards/desirable"] - metrics["rewards/undesirable"]
        last = step + 1 == steps
        if held and last:
            # 4. held-out ranking of desirable above undesirable by the implicit reward
            metrics.update(
                evaluate(inner, held, ref["heldout"], held_labels, cfg.beta, pad, device)
            )
        run.log(step + 1, metrics)
        if (step + 1) % cfg.log_every == 0 or last:
            run.progress(step + 1, steps, metrics, keys=("train/loss", "train/kl"))
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
