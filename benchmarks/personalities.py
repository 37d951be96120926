"""Two personalities from the same start: do they differ, and in the intended direction?

Trains the default model (SmolLM2-135M-Instruct) towards two personality specs with PPO on the
same training prompts (``rlhfkit personality train``; ``--method dpo``: DPO on the best and worst
of ``--samples`` replies per prompt, ranked by each spec's composite reward, with what the
ranking taught per attribute in ``pair_gaps``), then has the starting policy and both
results answer the same held-out prompts (``rlhfkit personality compare``; greedily, or with
``--eval-temperature T --eval-replies K`` K sampled replies per prompt, averaged per prompt):
attribute profiles with 95 % intervals, paired differences from the start and between the two,
and sample replies. Writes ``OUT/result.json`` and every compared reply with its scores to
``OUT/replies.jsonl``, and prints the comparison table.

Prompts: single-turn OASST first messages (real users' questions) from ``../shared/data``, split
into training and held-out prompts by a seeded shuffle (the demo's split).

Usage::

    .venv/bin/python benchmarks/personalities.py --out runs/personalities
    .venv/bin/python benchmarks/personalities.py --fast --out /tmp/pers   # tiny model, seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="tiny model, a few steps")
    parser.add_argument("--policy", default="default")
    parser.add_argument("--specs", nargs=2, default=["concise", "warm-and-polite"])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    # the OASST file holds 99 distinct single-turn prompts
    parser.add_argument("--train-prompts", type=int, default=64)
    parser.add_argument("--heldout-prompts", type=int, default=32)
    parser.add_argument(
        "--steps", type=int, default=12, help="PPO iterations (or DPO steps) per personality"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument(
        "--method",
        choices=("ppo", "dpo"),
        default="ppo",
        help="ppo: the composite reward is PPO's reward; dpo: best and worst of --samples"
        " replies per training prompt, ranked by the composite reward, become DPO pairs",
    )
    parser.add_argument("--samples", type=int, default=8, help="dpo: replies per prompt")
    parser.add_argument("--beta", type=float, default=0.1, help="dpo: KL strength")
    parser.add_argument(
        "--rpo-alpha",
        type=float,
        default=0.0,
        help="dpo: weight of the chosen replies' likelihood per token (RPO; 0 = plain DPO)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--eval-temperature", type=float, default=0.0, help="comparison: 0 decodes greedily"
    )
    parser.add_argument(
        "--eval-replies", type=int, default=1, help="comparison: sampled replies per prompt"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/personalities"))
    args = parser.parse_args(argv)
    if args.fast:
        args.policy, args.steps, args.batch_size, args.lr = "tiny", 2, 4, 1e-3
        args.train_prompts, args.heldout_prompts, args.max_new_tokens = 8, 4, 8
        if args.method == "dpo":  # the tiny model's replies often tie: fewer pairs
            args.batch_size = 2

    import torch

    from rlhfkit.demo import load_prompts, write_prompts
    from rlhfkit.personality.compare import check_decoding, compare_runs, format_comparison
    from rlhfkit.personality.training import Config, train_personality

    # a bad evaluation setting fails now, not after both personalities have trained
    check_decoding(args.eval_temperature, args.eval_replies, args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    train, heldout = load_prompts(
        args.data_dir, args.train_prompts, args.heldout_prompts, args.seed
    )
    args.out.mkdir(parents=True, exist_ok=True)
    train_file = write_prompts(train, args.out / "train-prompts.jsonl")
    heldout_file = write_prompts(heldout, args.out / "heldout-prompts.jsonl")

    runs, seconds, pair_gaps = [], {}, {}
    for spec in args.specs:
        started = time.time()
        run = train_personality(
            Config(
                spec=spec,
                policy=args.policy,
                prompts=str(train_file),
                out=args.out / spec,
                method=args.method,
                steps=args.steps,
                batch_size=args.batch_size,
                samples=args.samples,
                pair_prompts=len(train),
                beta=args.beta,
                rpo_alpha=args.rpo_alpha,
                lr=args.lr,
                max_new_tokens=args.max_new_tokens,
                seed=args.seed,
            )
        )
        seconds[spec] = round(time.time() - started, 1)
        print(f"[personalities] {spec}: {run} in {seconds[spec]:.0f}s", file=sys.stderr)
        runs.append(str(run))
        if args.method == "dpo":
            pair_gaps[spec] = _pair_gaps(run / "pairs.jsonl")

    started = time.time()
    # start first, so every difference is measured from it; then the two against each other,
    # from the same replies
    report = compare_runs(
        [args.policy, *runs],
        str(heldout_file),
        n_prompts=args.heldout_prompts,
        max_new_tokens=args.max_new_tokens,
        samples=3,
        contrasts=[(2, 1)],
        temperature=args.eval_temperature,
        replies_per_prompt=args.eval_replies,
        seed=args.seed,
        replies_out=args.out / "replies.jsonl",
    )
    contrast = report["differences"][-1:]
    seconds["compare"] = round(time.time() - started, 1)
    result = {
        "command": "python benchmarks/personalities.py " + " ".join(argv or sys.argv[1:]),
        "policy": args.policy,
        "specs": args.specs,
        "method": args.method,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        **(
            {"samples": args.samples, "beta": args.beta, "rpo_alpha": args.rpo_alpha}
            if args.method == "dpo"
            else {}
        ),
        "max_new_tokens": args.max_new_tokens,
        "train_prompts": len(train),
        "comparison": report,
        "contrast": contrast,
        "seconds": seconds,
        # dpo: what the ranking taught, per attribute: mean score of the chosen reply minus
        # the rejected one over the training pairs
        **({"pair_gaps": pair_gaps} if pair_gaps else {}),
        "final_kl": {
            spec: _last(run, "objective/kl") for spec, run in zip(args.specs, runs, strict=True)
        },
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(format_comparison(report))
    print(json.dumps({"result": str(args.out / "result.json"), "seconds": seconds}))
    return 0


def _pair_gaps(pairs_file: Path) -> dict[str, float | int]:
    """Mean chosen-minus-rejected score of every built-in attribute over DPO's ranked pairs."""
    from rlhfkit.data import read_preferences
    from rlhfkit.personality.scorers import ATTRIBUTES, score

    pairs = read_preferences(str(pairs_file))
    chosen, rejected = [p.chosen for p in pairs], [p.rejected for p in pairs]
    return {
        name: round(
            sum(score(name, chosen)) / len(pairs) - sum(score(name, rejected)) / len(pairs), 4
        )
        for name in ATTRIBUTES
    } | {"pairs": len(pairs)}


def _last(run: str, key: str) -> float | None:
    rows = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines() if x]
    return rows[-1].get(key) if rows else None


if __name__ == "__main__":
    sys.exit(main())
