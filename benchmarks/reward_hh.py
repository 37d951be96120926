"""`make bench-reward`: the default model's reward model on HH-RLHF harmless-base pairs.

Trains on 1,500 of the 1,800 pairs in ../shared/data/hh-rlhf/harmless-base-dev.jsonl.gz and
reports accuracy on the 300 held out (a seeded split; the same every run). Nothing is dropped
for length: prompts are cut from the left to --max-length so the two final replies are always
scored whole. Settings are chosen to finish in about 30 minutes on two CPU cores: the prompt
is run once per pair (shared-prefix), and the embeddings and bottom layers are frozen so
backward only pays for the top of the network.

    python benchmarks/reward_hh.py                  # full run into runs/bench-reward-hh
    python benchmarks/reward_hh.py --fast           # tiny model, a few steps (smoke test)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-reward-hh")
    parser.add_argument("--data", type=Path, default=HH)
    parser.add_argument("--model", default="default")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--freeze-layers", type=int, default=18)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--fast", action="store_true", help="tiny model, 3 steps")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"{args.data}: not found (the benchmark reads ../shared/data)", file=sys.stderr)
        return 2

    import torch

    from rlhfkit.train import reward

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fast:
        args.model, args.max_steps, args.freeze_layers, args.max_length = "tiny", 3, 1, 256
        args.batch_size, args.grad_accum = 8, 2
    if args.out.exists():
        shutil.rmtree(args.out)
    cfg = reward.Config(
        model=args.model,
        data=str(args.data),
        out=args.out,
        max_length=args.max_length,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        warmup_steps=5,
        freeze_layers=args.freeze_layers,
        eval_fraction=300 / 1800,
        seed=0,
        mixed_precision=args.mixed_precision,
        save_every=20,
        log_every=1,
    )
    started = time.time()
    run = reward.train(cfg)
    seconds = time.time() - started
    evaluation = json.loads((run / "eval.json").read_text())
    steps = len((run / "metrics.jsonl").read_text().splitlines())
    result = {
        "heldout": evaluation["heldout"],
        "train_pairs": evaluation["train_pairs"],
        "seconds": round(seconds, 1),
        "pairs_per_second": round(steps * args.batch_size / seconds, 3),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    (run / "bench.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
