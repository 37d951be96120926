"""PPO on the default model against the `make bench-reward` reward model, on HH harmless prompts.

The prompts are those of ../shared/data/hh-rlhf/harmless-base-dev.jsonl.gz, split exactly as
`benchmarks/reward_hh.py` splits the pairs (seed 0, 300 of 1,800 held out): PPO trains on the
training side's prompts and is evaluated on held-out prompts before and after, with the same
reward model (normalised: reference responses score mean 0). The training curves (reward, KL to
the reference, entropy, response length, EOS share) come from the run's metrics.jsonl and are
drawn into a PNG beside bench.json.

    python benchmarks/ppo_hh.py                      # after make bench-reward
    python benchmarks/ppo_hh.py --mixed-precision bf16 --steps 100   # on a GPU
    python benchmarks/ppo_hh.py --fast               # tiny models, a few steps (smoke test)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-dev.jsonl.gz"
CURVES = ("objective/scores", "objective/kl", "policy/entropy", "response/length")


def split_prompts(data: Path, out: Path, n_eval: int) -> tuple[Path, Path, int]:
    """Training-side and held-out pairs (reward_hh.py's split) written as pair files whose
    prompts PPO reads; the held-out file keeps ``n_eval`` pairs."""
    from rlhfkit.data import read_preferences, write_preferences_jsonl
    from rlhfkit.train.reward import split_holdout

    pairs = read_preferences(str(data))
    train, held = split_holdout(pairs, 300 / 1800, seed=0)
    train_path, held_path = out / "prompts-train.jsonl", out / "prompts-heldout.jsonl"
    write_preferences_jsonl(train, train_path)
    write_preferences_jsonl(held[:n_eval], held_path)
    return train_path, held_path, len(train)


def paired(before: dict | None, after: dict | None, key: str = "scores") -> dict | None:
    """Before against after, reply by reply on the same held-out prompts: mean difference of
    the normalised reward (``key``: the scores as generated, or ``scores_if_ended``), its
    paired t, and how many replies got better or worse."""
    if not before or not after or key not in before or key not in after:
        return None
    diffs = [a - b for a, b in zip(after[key], before[key], strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return {
        "n": n,
        "mean_diff": round(mean, 4),
        "sd_diff": round(sd, 4),
        "t": round(mean / (sd / n**0.5), 3) if sd > 0 else None,
        "better": sum(d > 0 for d in diffs),
        "worse": sum(d < 0 for d in diffs),
    }


def plot(metrics: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in CURVES if any(k in m for m in metrics)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(axes if len(keys) > 1 else [axes], keys, strict=True):
        steps = [m["step"] for m in metrics if key in m]
        ax.plot(steps, [m[key] for m in metrics if key in m], lw=1.2)
        ax.set_title(key)
        ax.set_xlabel("PPO step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-ppo-hh")
    parser.add_argument("--data", type=Path, default=HH)
    parser.add_argument("--policy", default="default")
    parser.add_argument("--reward", default=str(ROOT / "runs" / "bench-reward-hh" / "model"))
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-prompt-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--ppo-epochs", type=int, default=1)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument(
        "--missing-eos-penalty",
        type=float,
        default=None,
        help="score for replies cut at --max-new-tokens (default: keep the reward model's)",
    )
    parser.add_argument("--num-minibatches", type=int, default=1)
    parser.add_argument(
        "--value-freeze-layers",
        type=int,
        default=0,
        help="freeze the value model's bottom N blocks (make bench-reward trains its reward "
        "model, where the value model starts, with 18 frozen)",
    )
    parser.add_argument("--eval-samples", type=int, default=48)
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--fast", action="store_true", help="tiny models, 3 steps")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"{args.data}: not found (the benchmark reads ../shared/data)", file=sys.stderr)
        return 2

    import torch

    from rlhfkit.train import ppo

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    if args.fast:
        from rlhfkit.train import reward

        args.policy, args.steps, args.eval_samples, args.max_new_tokens = "tiny", 3, 8, 16
        args.reward = str(
            reward.train(
                reward.Config(
                    model="tiny", data=str(args.data), out=args.out / "tiny-rm", max_steps=2
                )
            )
            / "model"
        )
    elif not Path(args.reward).is_dir():
        print(f"{args.reward}: no reward model (run make bench-reward first)", file=sys.stderr)
        return 2
    train_prompts, held_prompts, n_train = split_prompts(args.data, args.out, args.eval_samples)
    cfg = ppo.Config(
        policy=args.policy,
        reward=args.reward,
        prompts=str(train_prompts),
        eval_prompts=str(held_prompts),
        eval_samples=args.eval_samples,
        out=args.out / "run",
        max_steps=args.steps,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        max_prompt_length=args.max_prompt_length,
        lr=args.lr,
        ppo_epochs=args.ppo_epochs,
        num_minibatches=args.num_minibatches,
        value_freeze_layers=args.value_freeze_layers,
        kl_coef=args.kl_coef,
        missing_eos_penalty=args.missing_eos_penalty,
        mixed_precision=args.mixed_precision,
        seed=0,
        log_every=1,
    )
    started = time.time()
    run = ppo.train(cfg)
    seconds = time.time() - started
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    plot(metrics, args.out / "curves.png")
    evaluation = json.loads((run / "eval.json").read_text())
    first, last = metrics[: max(1, len(metrics) // 5)], metrics[-max(1, len(metrics) // 5) :]

    def mean(rows, key):
        values = [r[key] for r in rows if key in r]
        return round(sum(values) / len(values), 4) if values else None

    result = {
        "heldout_paired": paired(evaluation.get("before"), evaluation.get("after")),
        # the same comparison with every reply scored as if it had ended (EOS appended to the
        # cut-off ones): what is left of the gain once ending is no longer what is paid for
        "heldout_paired_if_ended": paired(
            evaluation.get("before"), evaluation.get("after"), "scores_if_ended"
        ),
        "heldout_before": evaluation.get("before"),
        "heldout_after": evaluation.get("after"),
        "train_reward_first_fifth": mean(first, "objective/scores"),
        "train_reward_last_fifth": mean(last, "objective/scores"),
        "kl_last_fifth": mean(last, "objective/kl"),
        "steps": len(metrics),
        "train_prompts_pairs": n_train,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, len(metrics)), 2),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "bench.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
