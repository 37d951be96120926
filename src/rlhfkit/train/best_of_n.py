"""Best-of-n (rejection) sampling: n responses per prompt, the reward model keeps the best.

The kept responses are a demonstration file for rejection-sampling fine-tuning (feed it to
``rlhfkit sft``); the report says how much the reward gains with n, which is the cheapest
measure of how much a reward model can improve a policy before any RL.

Example::

    from rlhfkit.train.best_of_n import Config, rejection_sample
    report = rejection_sample(Config(policy="runs/sft/model", reward="runs/rm/model",
                                     prompts="prompts.jsonl", num_samples=8))
    report["best_of_k"]  # mean reward of the best of k samples, k = 1..8 (non-decreasing)

1. generate: per batch of prompts, each sampled n times (batched, KV cache, cut after EOS)
2. score: normalised reward-model score; optionally a fixed score for responses without EOS
3. record every sample and its reward in ``samples.jsonl`` (one line per prompt, appended per
   batch: this file is the checkpoint, ``--resume`` continues after its last complete batch)
4. at the end: ``demonstrations.jsonl`` (the best response per prompt) and ``report.json``
   (best-of-k for k = 1..n with the unbiased estimator, see :func:`best_of_k_curve`)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.data import write_examples_jsonl
from rlhfkit.data.records import Example
from rlhfkit.errors import InputError
from rlhfkit.models import generate, load_policy
from rlhfkit.models.heads import normalize
from rlhfkit.train.base import frozen_reward_model, make_accelerator, raw_scores, read_prompts
from rlhfkit.train.common import seed_everything
from rlhfkit.train.run import Run, describe_input

SAMPLES = "samples.jsonl"
DEMONSTRATIONS = "demonstrations.jsonl"
REPORT = "report.json"


@dataclass
class Config:
    """Best-of-n sampling against a reward model."""

    policy: str = "default"
    """Policy to sample from: default, tiny, a model directory or hub id."""
    reward: str = ""
    """Reward model directory (written by `rlhfkit reward train`)."""
    prompts: str = ""
    """Prompts: any supported file (its prompts are used; responses ignored)."""
    format: str | None = None
    """Prompts file format (auto-detected when omitted)."""
    out: Path = Path("runs/best-of-n")
    """Run directory to write (samples, demonstrations, report, config, provenance)."""
    num_samples: int = 8
    """Samples per prompt (n)."""
    max_prompts: int = 0
    """Use only the first N prompts (0 = all)."""
    batch_size: int = 8
    """Prompts per generation batch (each sampled n times, so n*batch sequences at once)."""
    max_prompt_length: int = 256
    """Prompts are cut from the left to this many tokens."""
    max_new_tokens: int = 64
    """Longest response in tokens."""
    temperature: float = 0.7
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1 = off)."""
    missing_eos_penalty: float | None = None
    """Score given to responses that never emit EOS (normalised units); none keeps the reward
    model's score."""
    seed: int = 0
    """Sampling seed (each batch gets its own, so a resumed run samples the same)."""
    resume: bool = False
    """Continue the run in --out after its last complete batch."""
    mixed_precision: str = "no"
    """Accelerate mixed precision: no, bf16 or fp16 (bf16 on GPUs)."""


def check_config(cfg: Config) -> None:
    """Reject bad values before any model is loaded; messages name the flag."""
    if not cfg.reward:
        raise InputError("--reward: a reward model directory is required")
    if not cfg.prompts:
        raise InputError("--prompts: a prompts file is required")
    for name in ("num_samples", "batch_size", "max_new_tokens"):
        if getattr(cfg, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag}: expected at least 1, got {getattr(cfg, name)}")
    if cfg.max_prompts < 0:
        raise InputError(f"--max-prompts: expected 0 (all) or more, got {cfg.max_prompts}")
    if cfg.temperature <= 0:
        raise InputError(
            f"--temperature: sampling needs a positive temperature, got {cfg.temperature}"
        )
    if not 0 < cfg.top_p <= 1:
        raise InputError(f"--top-p: expected 0 < value <= 1, got {cfg.top_p}")


def best_of_k_curve(rewards: torch.Tensor) -> list[float]:
    """Mean over prompts of E[max reward of k samples], k = 1..n, from ``(prompts, n)`` rewards.

    Unbiased estimate using all n samples (not just the first k): with the rewards of a prompt
    sorted ascending, r_(1) <= ... <= r_(n), the best of a random k-subset is r_(i) with
    probability C(i-1, k-1) / C(n, k). k = 1 gives the mean reward, k = n the maximum, and the
    curve never decreases.

    >>> best_of_k_curve(torch.tensor([[1.0, 2.0, 6.0]]))
    [3.0, 4.666666666666667, 6.0]
    """
    n = rewards.shape[-1]
    ordered = rewards.double().sort(dim=-1).values.mean(dim=0)  # (n,) mean of i-th smallest
    curve = []
    for k in range(1, n + 1):
        weights = torch.tensor(
            [math.comb(i - 1, k - 1) / math.comb(n, k) for i in range(1, n + 1)],
            dtype=torch.float64,
        )
        curve.append((weights * ordered).sum().item())
    return curve


def _read_done(path: Path, batch_size: int) -> list[dict]:
    """Rows of complete batches in ``samples.jsonl`` (a crash can leave a partial batch)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a crash: everything from here is redone
    return rows[: len(rows) // batch_size * batch_size]


def rejection_sample(cfg: Config) -> dict:
    """Sample, score, keep the best; returns the report (also written to ``report.json``)."""
    check_config(cfg)
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    prompts = read_prompts(cfg.prompts, cfg.format)
    if cfg.max_prompts:
        prompts = prompts[: cfg.max_prompts]
    policy = load_policy(cfg.policy, seed=cfg.seed)
    policy.model.to(device)
    reward_model, rm = frozen_reward_model(cfg.reward, policy.tokenizer, device)
    seed_everything(cfg.seed)
    run = Run(cfg.out, cfg, is_main=accelerator.is_main_process, resume=cfg.resume)
    samples_path = run.dir / SAMPLES

    done = _read_done(samples_path, cfg.batch_size) if cfg.resume else []
    if accelerator.is_main_process:
        # rewrite without any partial batch, so appends continue a clean file
        samples_path.write_text("".join(json.dumps(r) + "\n" for r in done), encoding="utf-8")
        run.truncate_metrics(len(done) // cfg.batch_size)
    run.write_provenance(
        kind="best-of-n",
        inputs={
            "policy": describe_input(cfg.policy),
            "reward": describe_input(cfg.reward),
            "prompts": describe_input(cfg.prompts),
        },
        extra={
            "prompts": len(prompts),
            "n": cfg.num_samples,
            "reward_normalization": rm.model.config.rlhfkit_reward,
        },
    )

    n_batches = math.ceil(len(prompts) / cfg.batch_size)
    for batch in range(len(done) // cfg.batch_size, n_batches):
        # 1. generate: this process's share of the batch, each prompt n times in a row
        first = batch * cfg.batch_size
        indices = list(range(first, min(first + cfg.batch_size, len(prompts))))
        mine = indices[accelerator.process_index :: accelerator.num_processes]
        rows = []
        if mine:
            gen = generate(
                policy,
                [prompts[i] for i in mine for _ in range(cfg.num_samples)],
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                max_prompt_tokens=cfg.max_prompt_length,
                seed=cfg.seed * 1_000_003 + batch * 101 + accelerator.process_index,
                batch_size=len(mine) * cfg.num_samples,
            )
            # 2. score
            scores = normalize(raw_scores(reward_model, gen, device).unsqueeze(-1), rm.model.config)
            scores = scores[:, 0]
            if cfg.missing_eos_penalty is not None:
                penalty = torch.full_like(scores, cfg.missing_eos_penalty)
                scores = torch.where(gen.has_eos.to(device), scores, penalty)
            scores = scores.view(len(mine), cfg.num_samples).tolist()  # (prompts, n)
            eos = gen.has_eos.view(len(mine), cfg.num_samples).tolist()
            for j, i in enumerate(mine):
                texts = gen.texts[j * cfg.num_samples : (j + 1) * cfg.num_samples]
                rows.append({"index": i, "rewards": scores[j], "has_eos": eos[j], "texts": texts})
        # 3. record (main process, in prompt order)
        if accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            rows = gather_object(rows)
        rows.sort(key=lambda r: r["index"])
        if accelerator.is_main_process:
            with open(samples_path, "a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in rows)
        rewards = torch.tensor([r["rewards"] for r in rows])  # (prompts, n)
        metrics = {
            "reward/mean": rewards.mean().item(),
            "reward/best": rewards.max(dim=-1).values.mean().item(),
            "response/eos_share": sum(sum(r["has_eos"]) for r in rows) / rewards.numel(),
        }
        run.log(batch + 1, metrics)
        run.progress(batch + 1, n_batches, metrics, keys=("reward/mean", "reward/best"))

    # 4. demonstrations and the report
    accelerator.wait_for_everyone()
    rows = _read_done(samples_path, 1)
    rewards = torch.tensor([r["rewards"] for r in rows])  # (prompts, n)
    curve = best_of_k_curve(rewards)
    report = {
        "run": str(run.dir),
        "prompts": len(rows),
        "n": cfg.num_samples,
        "best_of_k": [round(x, 6) for x in curve],
        "gain": [round(x - curve[0], 6) for x in curve],
        "eos_share": round(sum(sum(r["has_eos"]) for r in rows) / rewards.numel(), 4),
        "demonstrations": str(run.dir / DEMONSTRATIONS),
    }
    if accelerator.is_main_process:
        best = []
        for r in rows:
            k = max(range(cfg.num_samples), key=r["rewards"].__getitem__)  # first of equal best
            best.append(
                Example(
                    prompt=prompts[r["index"]],
                    completion=r["texts"][k],
                    item_id=str(r["index"]),
                    source=f"{cfg.prompts}#{r['index']}",
                    meta={"reward": r["rewards"][k], "n": cfg.num_samples, "policy": cfg.policy},
                )
            )
        write_examples_jsonl(best, run.dir / DEMONSTRATIONS)
        (run.dir / REPORT).write_text(json.dumps(report, indent=2), encoding="utf-8")
    run.close()
    return report
