"""DPO on real human preference pairs: HH-RLHF harmless or OpenAssistant, default model.

Trains `rlhfkit dpo` on the pairs of one of the shared datasets with a seeded held-out share,
evaluates the held-out implicit-reward accuracy every few steps, and draws the curves (loss,
training and held-out accuracy, chosen and rejected implicit rewards, margin) into a PNG beside
bench.json.

    python benchmarks/dpo_real.py --data hh        # ../shared/data/hh-rlhf/harmless-base-dev
    python benchmarks/dpo_real.py --data oasst     # ../shared/data/oasst/en_100_message.jsonl
    python benchmarks/dpo_real.py --fast           # tiny model, a few steps (smoke test)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = {
    "hh": ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-dev.jsonl.gz",
    "oasst": ROOT.parent / "shared" / "data" / "oasst" / "en_100_message.jsonl",
}
PANELS = (
    ("loss", ("train/loss",)),
    ("accuracy", ("rewards/accuracies", "eval/accuracy")),
    ("implicit reward", ("rewards/chosen", "rewards/rejected")),
    ("margin", ("rewards/margins", "eval/margin")),
)


def plot(metrics: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
    for ax, (name, keys) in zip(axes, PANELS, strict=True):
        for key in keys:
            rows = [m for m in metrics if key in m]
            if rows:
                style = "o-" if key.startswith("eval/") else "-"
                ax.plot([m["step"] for m in rows], [m[key] for m in rows], style, lw=1.2, ms=3)
        ax.legend(keys, fontsize=7)
        ax.set_title(name)
        ax.set_xlabel("DPO step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="hh", help="hh, oasst, or a preference file")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/bench-dpo-DATA")
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument(
        "--pairs",
        type=int,
        default=400,
        help="use this many pairs (a seeded sample; 0 = all): DPO scores every training pair "
        "under the reference before step 1, so the sample bounds that pass",
    )
    parser.add_argument("--eval-fraction", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--fast", action="store_true", help="tiny model, 3 steps")
    args = parser.parse_args(argv)
    data = DATA.get(args.data, Path(args.data))
    if not data.exists():
        print(f"{data}: not found (the benchmark reads ../shared/data)", file=sys.stderr)
        return 2
    out = args.out or ROOT / "runs" / f"bench-dpo-{args.data if args.data in DATA else 'data'}"

    import torch

    from rlhfkit.train import dpo

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fast:
        args.model, args.steps, args.eval_every = "tiny", 3, 2
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if args.pairs:
        import random

        from rlhfkit.data import read_preferences, write_preferences_jsonl

        pairs = read_preferences(str(data))
        if args.pairs < len(pairs):
            pairs = random.Random(0).sample(pairs, args.pairs)
        data = out / "pairs.jsonl"
        write_preferences_jsonl(pairs, data)
    cfg = dpo.Config(
        model=args.model,
        data=str(data),
        out=out / "run",
        max_length=args.max_length,
        batch_size=args.batch_size,
        lr=args.lr,
        beta=args.beta,
        max_steps=args.steps,
        warmup_steps=min(3, args.steps),
        eval_fraction=args.eval_fraction,
        eval_every=args.eval_every,
        seed=0,
        save_every=0,
        log_every=1,
    )
    started = time.time()
    run = dpo.train(cfg)
    seconds = time.time() - started
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    plot(
        metrics, out / "curves.png", f"DPO, {args.model}, {args.data}, {args.pairs or 'all'} pairs"
    )
    evals = [{k: m[k] for k in m if k == "step" or k.startswith("eval/")} for m in metrics]
    result = {
        "heldout": json.loads((run / "eval.json").read_text())["heldout"],
        "heldout_curve": [e for e in evals if len(e) > 1],
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, len(metrics)), 2),
        "threads": torch.get_num_threads(),
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    (out / "bench.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
