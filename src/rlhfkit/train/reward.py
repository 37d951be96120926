"""Reward model from pairwise comparisons (Bradley-Terry), one head per labelled attribute.

Example::

    from rlhfkit.train.reward import Config, train
    train(Config(model="tiny", data="pairs.jsonl", out="runs/rm", max_steps=10))

1. data: pairs encoded once; prompts cut from the left so the final responses always fit
2. model: sequence-classification head on the policy body (head 0 = overall preference)
3. loop: chosen and rejected of a micro-batch in one forward pass, dynamic padding,
   length-grouped global batches, loss normalised by the global number of judged comparisons
4. normalise on the training responses (offset/scale stored in the config), save
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rlhfkit.data import read_preferences
from rlhfkit.data.records import PreferencePair
from rlhfkit.errors import InputError
from rlhfkit.models.chat import encode_prompt, encode_response
from rlhfkit.models.heads import RewardModel, load_reward_model, set_normalization
from rlhfkit.models.packing import Document, pack
from rlhfkit.train.base import (
    GlobalBatchSampler,
    TrainConfig,
    apply_lora,
    derive_batches,
    disable_dropout,
    freeze_bottom,
    length_batches,
    make_accelerator,
    make_optimizer,
    prepare,
    total_steps,
)
from rlhfkit.train.common import seed_everything
from rlhfkit.train.run import Run, describe_input, load_checkpoint, rater_summary, save_checkpoint


@dataclass
class Config(TrainConfig):
    """Reward-model training."""

    model: str = "default"
    """Body to start from (usually the SFT policy): default, tiny, a model directory or id."""
    data: str = ""
    """Preference pairs: any supported file (TRL, HH-RLHF, OASST, PandaLM, ...)."""
    format: str | None = None
    """Data format (auto-detected when omitted)."""
    out: Path = Path("runs/reward")
    """Run directory to write."""
    lr: float = 1e-5
    """Peak learning rate."""
    use_margin: bool = False
    """Subtract each pair's margin (preference strength) inside the loss."""
    attributes: list[str] | None = None
    """Extra heads, one per attribute label (e.g. helpful,harmless); default: none."""
    eval_fraction: float = 0.0
    """Hold out this share of pairs (deterministically) and report accuracy on it."""
    eval_data: str | None = None
    """A separate file of pairs to evaluate on after training."""
    freeze_layers: int = 0
    """Freeze the embeddings and this many bottom transformer layers (0 = train everything)."""
    share_prefix: bool = True
    """Run each prompt once and continue both responses from its key/value cache."""


@dataclass
class EncodedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    margin: float
    head_mask: list[bool]
    """Which heads judged this pair (head 0 always; an attribute head when labels differ)."""
    flip: list[bool]
    """Per head: True when the attribute favours the rejected side (swap for that head)."""

    def sequences(self) -> tuple[list[int], list[int]]:
        return self.prompt + self.chosen, self.prompt + self.rejected

    def __len__(self) -> int:
        return len(self.prompt) + max(len(self.chosen), len(self.rejected))


def encode_pair(
    tokenizer, pair: PreferencePair, max_length: int, attributes: list[str]
) -> EncodedPair:
    """Tokenise a pair, cutting the prompt from the left (HH dialogues are long and differ only
    at the end); responses longer than the budget are cut from the right."""
    chosen = encode_response(tokenizer, pair.chosen)[: max_length - 1]
    rejected = encode_response(tokenizer, pair.rejected)[: max_length - 1]
    room = max_length - max(len(chosen), len(rejected))
    prompt = encode_prompt(tokenizer, pair.prompt)
    prompt = prompt[-room:] if room > 0 else []
    head_mask, flip = [not pair.tie], [False]
    for attr in attributes:
        c = (pair.labels.get("chosen") or {}).get(attr)
        r = (pair.labels.get("rejected") or {}).get(attr)
        judged = c is not None and r is not None and float(c) != float(r)
        head_mask.append(judged)
        flip.append(judged and float(c) < float(r))
    return EncodedPair(prompt, chosen, rejected, float(pair.margin or 0.0), head_mask, flip)


def pair_scores(
    model, pairs: list[EncodedPair], pad_id: int, device, share_prefix: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected of every pair in ONE forward pass: (batch, heads) each.

    The pairs are packed (no padding computed, see :mod:`rlhfkit.models.packing`). With
    ``share_prefix`` each prompt is laid down once and both responses follow it, each seeing
    the prompt and itself only (HH prompts are long multi-turn dialogues; the two sides differ
    only at the end); without it, prompt + chosen and prompt + rejected are separate sequences.
    """
    if share_prefix:
        docs = [Document(p.prompt, [p.chosen, p.rejected]) for p in pairs]
    else:
        docs = [Document(p.prompt, [side]) for p in pairs for side in (p.chosen, p.rejected)]
    scores = model(pack(docs, pad_id).to(device))  # (2b, heads): chosen0, rejected0, ...
    return scores[0::2], scores[1::2]


def pair_loss(chosen, rejected, pairs: list[EncodedPair], use_margin: bool):
    """Summed Bradley-Terry loss over judged (pair, head) comparisons, and their count."""
    device = chosen.device
    flip = torch.tensor([p.flip for p in pairs], device=device)
    mask = torch.tensor([p.head_mask for p in pairs], device=device)
    diff = torch.where(flip, rejected - chosen, chosen - rejected)  # (batch, heads)
    if use_margin:
        diff = diff - torch.tensor([p.margin for p in pairs], device=device).unsqueeze(-1)
    losses = -F.logsigmoid(diff)
    correct = ((diff > 0) & mask).sum()
    return (losses * mask).sum(), mask.sum(), correct


def split_holdout(pairs: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic split by position in a seeded permutation (same split every run)."""
    if fraction <= 0:
        return pairs, []
    import random

    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(len(pairs) * fraction)))
    held = set(order[:n_eval])
    return [p for i, p in enumerate(pairs) if i not in held], [
        p for i, p in enumerate(pairs) if i in held
    ]


@torch.no_grad()
def evaluate_pairs(
    model, encoded: list[EncodedPair], pad_id: int, device, batch_size: int = 16
) -> dict:
    """Accuracy (head 0), mean margin and expected calibration error of the BT probability."""
    chosen, rejected = score_pairs(model, encoded, pad_id, device, batch_size)
    return calibration_report(chosen[:, 0] - rejected[:, 0])


@torch.no_grad()
def score_pairs(
    model, encoded: list[EncodedPair], pad_id: int, device, batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (n, heads) of every pair's chosen and rejected side, in the order given; run in
    length-sorted batches capped in padded tokens (HH pairs range from 50 to 512 tokens, and
    a fixed batch of 16 spends most of its time on padding)."""
    was = model.training
    model.eval()
    chosen: list[torch.Tensor] = [torch.empty(0)] * len(encoded)
    rejected: list[torch.Tensor] = [torch.empty(0)] * len(encoded)
    for batch in length_batches([len(e) for e in encoded], batch_size):
        c, r = pair_scores(model, [encoded[i] for i in batch], pad_id, device)
        for j, i in enumerate(batch):
            chosen[i], rejected[i] = c[j].float().cpu(), r[j].float().cpu()
    model.train(was)
    if not encoded:
        return torch.empty(0, 1), torch.empty(0, 1)
    return torch.stack(chosen), torch.stack(rejected)


def calibration_report(margins: torch.Tensor, bins: int = 10) -> dict:
    """Accuracy, mean margin and ECE of p = sigmoid(margin) as the probability chosen wins."""
    if margins.numel() == 0:
        return {"accuracy": float("nan"), "n": 0, "mean_margin": float("nan"), "ece": float("nan")}
    p = torch.sigmoid(margins)
    correct = (margins > 0).float()
    # fold onto the predicted side: confidence = max(p, 1-p), hit = predicted side was right
    confidence = torch.maximum(p, 1 - p)
    ece = torch.zeros(())
    edges = torch.linspace(0.5, 1.0, bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence >= lo) & ((confidence < hi) | (hi == 1.0))
        if in_bin.any():
            ece += (
                in_bin.float().mean() * (confidence[in_bin].mean() - correct[in_bin].mean()).abs()
            )
    return {
        "accuracy": round(correct.mean().item(), 4),
        "n": int(margins.numel()),
        "mean_margin": round(margins.mean().item(), 4),
        "ece": round(ece.item(), 4),
    }


def train(cfg: Config) -> Path:
    """Train a reward model on ``cfg.data``; returns the run directory."""
    if not cfg.data:
        raise InputError("--data: a preference file is required")
    accelerator = make_accelerator(cfg)
    batches = derive_batches(cfg.batch_size, cfg.grad_accum, accelerator.num_processes)
    seed_everything(cfg.seed)
    run = Run(cfg.out, cfg, is_main=accelerator.is_main_process, resume=cfg.resume)
    attributes = list(cfg.attributes or [])

    # 1. data
    pairs = read_preferences(cfg.data, cfg.format)
    train_pairs, held_pairs = split_holdout(pairs, cfg.eval_fraction, cfg.seed)
    if not train_pairs:
        raise InputError(f"{cfg.data}: no preference pairs to train on")
    rm = load_reward_model(cfg.model, heads=["preference", *attributes], seed=cfg.seed)
    tok = rm.tokenizer
    encoded = [encode_pair(tok, p, cfg.max_length, attributes) for p in train_pairs]
    sampler = GlobalBatchSampler([len(e) for e in encoded], batches, cfg.seed, cfg.group_by_length)
    steps = total_steps(len(encoded), cfg)

    # 2. model
    body = rm.model
    disable_dropout(body)
    if cfg.lora:
        body = apply_lora(body, cfg, task_type="SEQ_CLS")
    trainable = freeze_bottom(body, cfg.freeze_layers)
    body.train()
    model = RewardModel(body)
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    model, optimizer, scheduler = prepare(accelerator, model, optimizer, scheduler)
    start = 0
    if cfg.resume and (state := load_checkpoint(accelerator, run)) is not None:
        start = state["step"]
        run.truncate_metrics(start)
    run.write_provenance(
        kind="reward",
        inputs={
            "model": describe_input(cfg.model if cfg.model in ("default", "tiny") else cfg.model),
            "data": describe_input(cfg.data),
        },
        extra={
            "pairs": len(pairs),
            "train_pairs": len(train_pairs),
            "heldout_pairs": len(held_pairs),
            "heads": rm.heads,
            "trainable_parameters": trainable,
            "raters": rater_summary(pairs),
        },
    )

    # 3. loop
    for step in range(start, steps):
        micro = sampler.micro_batches(step, accelerator.process_index)
        n_judged = sum(sum(encoded[i].head_mask) for i in sampler.global_batch(step))
        if n_judged == 0:
            continue
        loss_sum = torch.zeros((), device=accelerator.device)
        correct = torch.zeros((), device=accelerator.device)
        for k, items in enumerate(micro):
            chunk = [encoded[i] for i in items]
            ctx = accelerator.no_sync(model) if k < len(micro) - 1 else nullcontext()
            with ctx:
                c, r = pair_scores(
                    model, chunk, tok.pad_token_id, accelerator.device, cfg.share_prefix
                )
                s, _, ok = pair_loss(c, r, chunk, cfg.use_margin)
                accelerator.backward(s / n_judged * accelerator.num_processes)
            loss_sum += s.detach()
            correct += ok
        grad_norm = (
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            if cfg.max_grad_norm
            else 0.0
        )
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss = accelerator.reduce(loss_sum, reduction="sum") / n_judged
        acc = accelerator.reduce(correct.float(), reduction="sum") / n_judged
        metrics = {
            "train/loss": loss.item(),
            "train/accuracy": acc.item(),
            "train/grad_norm": float(grad_norm),
            "train/lr": scheduler.get_last_lr()[0],
        }
        run.log(step + 1, metrics)
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            run.progress(step + 1, steps, metrics, keys=("train/loss", "train/accuracy"))
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < steps:
            save_checkpoint(accelerator, run, step + 1, {})

    # 4. normalise and evaluate, then save
    accelerator.wait_for_everyone()
    scorer = accelerator.unwrap_model(model)
    body = scorer.model
    if accelerator.is_main_process:
        # reference responses: both sides of up to 128 training pairs (256 scores)
        chosen, rejected = score_pairs(scorer, encoded[:128], tok.pad_token_id, accelerator.device)
        set_normalization(_config_of(body), torch.cat([chosen, rejected]))
        summary = {"train_pairs": len(train_pairs)}
        if held_pairs:
            held = [encode_pair(tok, p, cfg.max_length, attributes) for p in held_pairs]
            summary["heldout"] = evaluate_pairs(scorer, held, tok.pad_token_id, accelerator.device)
        if cfg.eval_data:
            extra = [
                encode_pair(tok, p, cfg.max_length, attributes)
                for p in read_preferences(cfg.eval_data)
            ]
            summary["eval_data"] = evaluate_pairs(
                scorer, extra, tok.pad_token_id, accelerator.device
            )
        (run.dir / "eval.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        to_save = body.merge_and_unload() if cfg.lora else body
        run.save_model(to_save, tok)
    run.close()
    return run.dir


def _config_of(model):
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.config


def evaluate(
    model_dir: str, data: str, fmt: str | None = None, max_length: int = 512, batch_size: int = 16
) -> dict:
    """``rlhfkit reward eval``: accuracy, n, mean margin and ECE of a saved reward model.

    Example::

        evaluate("runs/rm/model", "heldout.jsonl")  # {"accuracy": 0.64, "n": 360, ...}
    """
    rm = load_reward_model(model_dir)
    pairs = read_preferences(data, fmt)
    attributes = rm.heads[1:]
    encoded = [encode_pair(rm.tokenizer, p, max_length, attributes) for p in pairs]
    return evaluate_pairs(
        RewardModel(rm.model), encoded, rm.tokenizer.pad_token_id, torch.device("cpu"), batch_size
    )
