"""``rlhfkit demo``: the whole loop, offline, on one machine, in minutes.

1. platform: a rater platform server on loopback with a temporary SQLite store
2. SFT: a short supervised fine-tune of the policy on human demonstrations
3. candidates: the SFT policy answers each training prompt twice (sampled)
4. judging: a simulated rater pool logs in and judges the pairs through the HTTP API
5. audit: agreement between raters and the pool's bias profile, from the exported judgments
6. reward model: trained on the export (provenance keeps the raters)
7. PPO: the SFT policy against that reward model, KL to the SFT policy
8. evaluation: the pool's true utility (the gold reward) of greedy replies on held-out prompts,
   before (SFT) and after (PPO)
9. report: the transparency report of the PPO run and the store

It ends with one JSON line: ``gold_reward_sft``, ``gold_reward_final``, ``kl``, ``report`` and
more. ``--fast`` runs the same stages on the tiny model with small settings (about a minute).

Example::

    from rlhfkit.demo import DemoConfig, run_demo
    summary = run_demo(DemoConfig(fast=True, out="runs/demo-fast"))
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DemoConfig:
    """Settings of the demo (the defaults are the full run on the default model)."""

    fast: bool = False
    """Tiny model, small settings: a smoke run of every stage in about a minute."""
    model: str = "default"
    """Policy to start from (the tiny model when --fast)."""
    out: Path = Path("runs/demo")
    """Directory for the demo's runs, data, store and report (replaced if it exists)."""
    data_dir: Path = field(default_factory=lambda: ROOT.parent / "shared" / "data")
    """Where the human data lives (OASST prompts, self-instruct demonstrations)."""
    pool: Path = field(default_factory=lambda: ROOT / "configs" / "pools" / "demo.yaml")
    """Simulated rater pool (its true utility is the gold reward)."""
    seed: int = 0
    """Seed for every stage."""


@dataclass
class Plan:
    """The sizes of each stage, derived once from the config."""

    model: str
    train_prompts: int
    heldout_prompts: int
    sft_steps: int
    sft_batch: int
    candidate_tokens: int
    overlap_k: int
    rm_max_length: int
    rm_epochs: float
    ppo_steps: int
    ppo_batch: int
    ppo_tokens: int
    ppo_lr: float
    ppo_epochs: int
    ppo_minibatches: int
    rm_freeze_layers: int

    @classmethod
    def of(cls, cfg: DemoConfig) -> Plan:
        if cfg.fast:
            return cls(
                model="tiny", train_prompts=16, heldout_prompts=8, sft_steps=4, sft_batch=8,
                candidate_tokens=16, overlap_k=3, rm_max_length=128, rm_epochs=1.0,
                ppo_steps=3, ppo_batch=4, ppo_tokens=12, ppo_lr=1e-4, ppo_epochs=2,
                ppo_minibatches=2, rm_freeze_layers=0,
            )  # fmt: skip
        # 27 min with 2 PPO epochs x 2 minibatches and a fully trained reward model (PPO was
        # two thirds of it); 20.8 min with one epoch, one minibatch, the reward model's bottom
        # 15 blocks frozen and 12 PPO iterations at lr 1e-5. Now: 8 iterations at 1.5e-5 (about
        # the same summed step size), the bottom 20 blocks of the reward and value models
        # frozen, 8 SFT steps, 48-token candidates (PPO's length), no second evaluation pass.
        return cls(
            model=cfg.model, train_prompts=64, heldout_prompts=32, sft_steps=8, sft_batch=8,
            candidate_tokens=48, overlap_k=3, rm_max_length=256, rm_epochs=1.0,
            ppo_steps=8, ppo_batch=8, ppo_tokens=48, ppo_lr=1.5e-5, ppo_epochs=1,
            ppo_minibatches=1, rm_freeze_layers=20,
        )  # fmt: skip


class Stage:
    """Prints the stage's start and duration; collects the timings."""

    timings: dict[str, float] = {}

    def __init__(self, number: int, name: str):
        self.number, self.name = number, name

    def __enter__(self):
        self.start = time.time()
        print(f"\n== {self.number}/9 {self.name}", file=sys.stderr, flush=True)
        return self

    def __exit__(self, *exc):
        took = time.time() - self.start
        Stage.timings[self.name] = round(took, 1)
        if exc[0] is None:
            print(f"   done in {took:.0f}s", file=sys.stderr, flush=True)
        return False


def load_prompts(data_dir: Path, n_train: int, n_heldout: int, seed: int):
    """Single-turn OASST prompts (real users' first messages), split into train and held-out."""
    from rlhfkit.data import read_examples

    path = data_dir / "oasst" / "en_100_message.jsonl"
    if not path.exists():
        raise InputError(
            f"{path}: not found; the demo reads prompts from ../shared/data "
            "(pass --data-dir to point elsewhere)"
        )
    prompts = [e.prompt for e in read_examples(path, "oasst") if len(e.prompt) == 1]
    unique = list({p[0]["content"]: p for p in prompts}.values())
    random.Random(seed).shuffle(unique)
    if len(unique) < n_train + n_heldout:
        raise InputError(
            f"{path}: {len(unique)} distinct single-turn prompts, {n_train + n_heldout} needed"
            f" ({n_train} to train on and {n_heldout} held out)"
        )
    return unique[:n_train], unique[n_train : n_train + n_heldout]


def write_prompts(prompts, path: Path) -> Path:
    """Prompts as prompt/completion jsonl (empty completions), the form the trainers read."""
    with open(path, "w", encoding="utf-8") as fh:
        for p in prompts:
            fh.write(json.dumps({"prompt": p, "completion": ""}) + "\n")
    return path


def _mean_ci(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / max(n - 1, 1))
    half = 1.96 * sd / math.sqrt(n)
    return {"mean": round(mean, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)], "n": n}


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage; returns the summary printed as the last JSON line."""
    from rlhfkit.models import generate, load_policy
    from rlhfkit.raters.personas import gold_reward, load_pool
    from rlhfkit.raters.simulate import (
        LocalPlatform,
        create_project,
        export_preferences,
        simulate_pool,
    )
    from rlhfkit.train import ppo, reward, sft

    plan = Plan.of(cfg)
    pool = load_pool(cfg.pool)
    out = Path(cfg.out)
    train_prompts, heldout = load_prompts(
        cfg.data_dir, plan.train_prompts, plan.heldout_prompts, cfg.seed
    )
    demos = cfg.data_dir / "self-instruct" / "seed_tasks.jsonl"
    if not demos.exists():
        raise InputError(f"{demos}: not found; the demo's SFT reads these demonstrations")
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    Stage.timings = {}
    started = time.time()

    with Stage(1, "platform: rater platform on loopback, temporary SQLite store"):
        database_url = f"sqlite:///{(out / 'platform.db').resolve()}"
        platform = LocalPlatform(database_url=database_url).start()
        print(f"   serving {platform.base_url} (store {database_url})", file=sys.stderr)
    try:
        with Stage(2, f"SFT: {plan.sft_steps} steps on self-instruct demonstrations"):
            sft_dir = sft.train(
                sft.Config(
                    model=plan.model,
                    data=str(demos),
                    out=out / "sft",
                    max_steps=plan.sft_steps,
                    batch_size=plan.sft_batch,
                    max_length=256,
                    lr=2e-5,
                    seed=cfg.seed,
                    save_every=0,
                    log_every=4,
                )
            )
            policy = load_policy(sft_dir / "model")

        with Stage(3, f"candidates: two sampled replies to {len(train_prompts)} prompts"):
            twice = [p for p in train_prompts for _ in range(2)]
            gen = generate(
                policy,
                twice,
                max_new_tokens=plan.candidate_tokens,
                temperature=1.0,
                seed=cfg.seed,
                max_prompt_tokens=256,
                batch_size=16,
                progress=True,
            )
            items = [
                (train_prompts[i], gen.texts[2 * i], gen.texts[2 * i + 1])
                for i in range(len(train_prompts))
                if gen.texts[2 * i] != gen.texts[2 * i + 1]
            ]
            print(f"   {len(items)} distinct pairs", file=sys.stderr)

        with Stage(4, f"judging: pool {pool.name!r} ({pool.raters} simulated raters) via HTTP"):
            project = create_project(
                platform.base_url,
                platform.admin_token,
                "demo",
                items,
                overlap_k=plan.overlap_k,
                gold_share=0.0,
            )
            judged = simulate_pool(
                pool, platform.base_url, project, platform.admin_token, seed=cfg.seed
            )
            prefs = out / "data" / "preferences.jsonl"
            n_pairs = export_preferences(platform.base_url, platform.admin_token, project, prefs)
            print(f"   {judged['judgments']} judgments, {n_pairs} exported pairs", file=sys.stderr)

        with Stage(5, "audit: agreement and the pool's bias profile"):
            from rlhfkit.raters.bias import audit_bias
            from rlhfkit.raters.quality import audit_agreement

            agreement = audit_agreement(prefs)
            bias = audit_bias(prefs, min_judgments=20)
            (out / "audit.json").write_text(
                json.dumps({"agreement": agreement, "bias": bias}, default=str, indent=2),
                encoding="utf-8",
            )
            length = bias["pool"]["coefficients"].get("length", {})
            print(
                f"   percent agreement {agreement.get('percent_agreement')}, "
                f"length coefficient {length.get('estimate')}",
                file=sys.stderr,
            )

        with Stage(6, f"reward model on {n_pairs} judged pairs"):
            rm_dir = reward.train(
                reward.Config(
                    model=str(sft_dir / "model"),
                    data=str(prefs),
                    out=out / "reward",
                    epochs=plan.rm_epochs,
                    batch_size=8,
                    max_length=plan.rm_max_length,
                    lr=2e-5,
                    freeze_layers=plan.rm_freeze_layers,
                    eval_fraction=0.15,
                    seed=cfg.seed,
                    save_every=0,
                    log_every=5,
                )
            )
            rm_eval = json.loads((rm_dir / "eval.json").read_text())

        with Stage(7, f"PPO: {plan.ppo_steps} iterations of {plan.ppo_batch} rollouts"):
            prompts_file = write_prompts(train_prompts, out / "data" / "prompts.jsonl")
            heldout_file = write_prompts(heldout, out / "data" / "heldout.jsonl")
            ppo_dir = ppo.train(
                ppo.Config(
                    policy=str(sft_dir / "model"),
                    reward=str(rm_dir / "model"),
                    prompts=str(prompts_file),
                    out=out / "ppo",
                    max_steps=plan.ppo_steps,
                    batch_size=plan.ppo_batch,
                    num_minibatches=plan.ppo_minibatches,
                    ppo_epochs=plan.ppo_epochs,
                    max_new_tokens=plan.ppo_tokens,
                    lr=plan.ppo_lr,
                    value_freeze_layers=plan.rm_freeze_layers,
                    kl_coef=0.05,
                    seed=cfg.seed,
                    normalize_samples=16,
                    eval_prompts=str(heldout_file),
                    eval_samples=plan.heldout_prompts,
                )
            )
            metrics = [json.loads(x) for x in (ppo_dir / "metrics.jsonl").read_text().splitlines()]

        with Stage(8, f"evaluation: gold reward on {len(heldout)} held-out prompts"):
            # The PPO run's evaluation already wrote the greedy replies of the starting (SFT)
            # and final policies to these prompts; the pool's true utility scores the same texts.
            evaluation = json.loads((ppo_dir / "eval.json").read_text(encoding="utf-8"))
            results = {}
            for name, when in (("sft", "before"), ("final", "after")):
                texts = evaluation[when]["replies"]
                gold = gold_reward(pool, heldout, texts)
                results[name] = {
                    "gold": _mean_ci(gold),
                    "length_words": _mean_ci([len(t.split()) for t in texts]),
                    "samples": [
                        {"prompt": p[0]["content"][:200], "reply": t[:400]}
                        for p, t in zip(heldout[:3], texts[:3], strict=True)
                    ],
                }
            (ppo_dir / "gold.json").write_text(json.dumps(results, indent=2), encoding="utf-8")

        with Stage(9, "report: how was this model trained?"):
            from rlhfkit.report.build import build_report
            from rlhfkit.report.render import write_report

            report = write_report(
                build_report([ppo_dir], database_url=database_url), out / "report.html"
            )
    finally:
        platform.stop()

    last = metrics[-1]
    summary = {
        "gold_reward_sft": results["sft"]["gold"]["mean"],
        "gold_reward_final": results["final"]["gold"]["mean"],
        "gold_reward_sft_ci95": results["sft"]["gold"]["ci95"],
        "gold_reward_final_ci95": results["final"]["gold"]["ci95"],
        "kl": round(last["objective/kl"], 4),
        "reward_model_heldout_accuracy": rm_eval.get("heldout", {}).get("accuracy"),
        "length_words_sft": results["sft"]["length_words"]["mean"],
        "length_words_final": results["final"]["length_words"]["mean"],
        "judgments": judged["judgments"],
        "raters": pool.raters,
        "percent_agreement": agreement.get("percent_agreement"),
        "report": str(report),
        "seconds": round(time.time() - started, 1),
        "stage_seconds": Stage.timings,
        "model": plan.model,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    _print_story(summary, results)
    return summary


def _print_story(summary: dict[str, Any], results: dict[str, Any]) -> None:
    change = summary["gold_reward_final"] - summary["gold_reward_sft"]
    lines = [
        "",
        "== What changed",
        f"   {summary['raters']} simulated raters gave {summary['judgments']} judgments "
        f"(raw agreement {summary['percent_agreement']}).",
        f"   Reward model held-out accuracy: {summary['reward_model_heldout_accuracy']}.",
        f"   Gold reward (the pool's true utility) on held-out prompts: "
        f"SFT {summary['gold_reward_sft']:.3f} -> PPO {summary['gold_reward_final']:.3f} "
        f"({change:+.3f}); KL to the SFT policy {summary['kl']:.3f} nats.",
        f"   Mean reply length: {summary['length_words_sft']:.1f} -> "
        f"{summary['length_words_final']:.1f} words.",
        f"   Sample before: {results['sft']['samples'][0]['reply'][:160]!r}",
        f"   Sample after:  {results['final']['samples'][0]['reply'][:160]!r}",
        f"   Transparency report: {summary['report']}",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)
