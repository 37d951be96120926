"""Supervised fine-tuning on demonstrations: cross-entropy on response tokens only.

Example::

    from rlhfkit.train.sft import Config, train
    train(Config(model="tiny", data="demos.jsonl", out="runs/sft", max_steps=10))

Read top to bottom: 1. data, 2. model, 3. loop (length-grouped global batches, loss normalised
by the global number of response tokens), 4. save.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.data import read_examples
from rlhfkit.errors import InputError
from rlhfkit.models import load_policy
from rlhfkit.models.chat import encode_prompt, encode_response
from rlhfkit.models.packing import Document, pack
from rlhfkit.train.base import (
    GlobalBatchSampler,
    SelectiveLM,
    TrainConfig,
    apply_lora,
    derive_batches,
    disable_dropout,
    make_accelerator,
    make_optimizer,
    prepare,
    total_steps,
)
from rlhfkit.train.common import seed_everything
from rlhfkit.train.run import Run, describe_input, load_checkpoint, rater_summary, save_checkpoint


@dataclass
class Config(TrainConfig):
    """Supervised fine-tuning."""

    model: str = "default"
    """Model to fine-tune: default, tiny, a model directory or hub id."""
    data: str = ""
    """Demonstrations: any supported file (TRL prompt/completion or messages, OASST, ...)."""
    format: str | None = None
    """Data format (auto-detected when omitted)."""
    out: Path = Path("runs/sft")
    """Run directory to write."""
    lr: float = 2e-5
    """Peak learning rate."""


def encode_demonstration(tokenizer, prompt, completion, max_length):
    """(input_ids, n_prompt_tokens) with the prompt cut from the left to fit ``max_length``."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    response_ids = encode_response(tokenizer, completion)[: max_length - 1]
    room = max_length - len(response_ids)
    prompt_ids = prompt_ids[-room:] if room > 0 else []
    return prompt_ids + response_ids, len(prompt_ids)


def train(cfg: Config) -> Path:
    """Fine-tune ``cfg.model`` on ``cfg.data``; returns the run directory."""
    if not cfg.data:
        raise InputError("--data: a demonstrations file is required")
    accelerator = make_accelerator(cfg)
    batches = derive_batches(cfg.batch_size, cfg.grad_accum, accelerator.num_processes)
    seed_everything(cfg.seed)
    run = Run(cfg.out, cfg, is_main=accelerator.is_main_process, resume=cfg.resume)

    # 1. data: encode once; the sampler groups by length inside each global batch
    examples = read_examples(cfg.data, cfg.format)
    if not examples:
        raise InputError(f"{cfg.data}: no demonstrations")
    policy = load_policy(cfg.model, seed=cfg.seed)
    tok = policy.tokenizer
    encoded = [encode_demonstration(tok, e.prompt, e.completion, cfg.max_length) for e in examples]
    sampler = GlobalBatchSampler(
        [len(ids) for ids, _ in encoded], batches, cfg.seed, cfg.group_by_length
    )
    steps = total_steps(len(encoded), cfg)

    # 2. model
    lm = policy.model
    disable_dropout(lm)
    if cfg.lora:
        lm = apply_lora(lm, cfg)
    lm.train()
    model = SelectiveLM(lm)
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    model, optimizer, scheduler = prepare(accelerator, model, optimizer, scheduler)
    start = 0
    if cfg.resume and (state := load_checkpoint(accelerator, run)) is not None:
        start = state["step"]
        run.truncate_metrics(start)
    run.write_provenance(
        kind="sft",
        inputs={
            "model": describe_input(policy.path or cfg.model),
            "data": describe_input(cfg.data),
        },
        extra={"examples": len(examples), "raters": rater_summary(examples)},
    )

    # 3. loop
    for step in range(start, steps):
        micro = sampler.micro_batches(step, accelerator.process_index)
        global_items = sampler.global_batch(step)
        n_tokens = sum(len(encoded[i][0]) - encoded[i][1] for i in global_items)
        total_loss = torch.zeros((), device=accelerator.device)
        for k, items in enumerate(micro):
            # packed, no padding computed: loss on the response tokens only
            batch = pack(
                [
                    Document(encoded[i][0][: encoded[i][1]], [encoded[i][0][encoded[i][1] :]])
                    for i in items
                ],
                tok.pad_token_id,
            ).to(accelerator.device)
            sync = k == len(micro) - 1
            with accelerator.no_sync(model) if not sync else nullcontext():
                logits = model(batch)  # (n_targets, vocab)
                loss_sum = torch.nn.functional.cross_entropy(
                    logits.float(), batch.targets, reduction="sum"
                )
                # DDP averages gradients over processes: scale so the result is the global mean
                loss = loss_sum / n_tokens * accelerator.num_processes
                accelerator.backward(loss)
            total_loss += loss_sum.detach()
        if cfg.max_grad_norm:
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        else:
            grad_norm = torch.zeros(())
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        total_loss = accelerator.reduce(total_loss, reduction="sum") / n_tokens
        metrics = {
            "train/loss": total_loss.item(),
            "train/grad_norm": float(grad_norm),
            "train/lr": scheduler.get_last_lr()[0],
            "train/tokens": n_tokens,
        }
        run.log(step + 1, metrics)
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            run.progress(step + 1, steps, metrics, keys=("train/loss",))
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < steps:
            save_checkpoint(accelerator, run, step + 1, {"epoch_steps": sampler.per_epoch})

    # 4. save
    accelerator.wait_for_everyone()
    run.save_model(accelerator.unwrap_model(model).lm, tok)
    run.close()
    return run.dir
