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

``--eval-prompts FILE`` compares on another held-out set instead (MT-Bench's first turns, say),
and ``--compare-only`` trains nothing: it compares the personalities an earlier run left in
``--out`` (on a new prompt set, or sampled instead of greedy) and writes
``OUT/compare-NAME.json`` and ``OUT/replies-NAME.jsonl``.

Prompts: single-turn OASST first messages (real users' questions) from ``../shared/data``, split
into training and held-out prompts by a seeded shuffle (the demo's split).

Usage::

    .venv/bin/python benchmarks/personalities.py --out runs/personalities
    .venv/bin/python benchmarks/personalities.py --fast --out /tmp/pers   # tiny model, seconds
    .venv/bin/python benchmarks/personalities.py --out runs/personalities --compare-only \
        --eval-prompts ../shared/data/mt-bench/question.jsonl --eval-temperature 1 --eval-replies 4
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
    parser.add_argument(
        "--eval-prompts",
        type=Path,
        default=None,
        help="comparison: another held-out prompts file (any prompts file, e.g."
        " ../shared/data/mt-bench/question.jsonl) instead of the OASST held-out split",
    )
    parser.add_argument(
        "--eval-n", type=int, default=None, help="comparison: how many --eval-prompts (all)"
    )
    parser.add_argument(
        "--compare-only",
        action="store_true",
        help="train nothing: compare the personalities an earlier run left in --out; writes"
        " OUT/compare-NAME.json and OUT/replies-NAME.jsonl, NAME from the prompts and decoding",
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
    from rlhfkit.errors import InputError
    from rlhfkit.personality.compare import check_decoding, compare_runs, format_comparison
    from rlhfkit.personality.training import Config, train_personality

    # a bad evaluation setting fails now, not after both personalities have trained
    check_decoding(args.eval_temperature, args.eval_replies, args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eval_prompts is not None and not args.eval_prompts.is_file():
        raise InputError(f"--eval-prompts {args.eval_prompts}: no such file")
    if args.eval_n is not None and args.eval_n < 1:
        raise InputError(f"--eval-n: expected 1 or more, got {args.eval_n}")
    runs, seconds, pair_gaps = [], {}, {}
    if args.compare_only:
        train, heldout_file = None, args.out / "heldout-prompts.jsonl"
        for spec in args.specs:
            if not (args.out / spec / "model").is_dir():
                raise InputError(
                    f"--compare-only: {args.out / spec / 'model'} not found; train it first"
                    " (the same command without --compare-only)"
                )
            runs.append(str(args.out / spec))
            if (args.out / spec / "pairs.jsonl").is_file():
                pair_gaps[spec] = _pair_gaps(args.out / spec / "pairs.jsonl")
        if args.eval_prompts is None and not heldout_file.is_file():
            raise InputError(f"--compare-only: {heldout_file} not found; train first")
    else:
        train, heldout = load_prompts(
            args.data_dir, args.train_prompts, args.heldout_prompts, args.seed
        )
        args.out.mkdir(parents=True, exist_ok=True)
        write_prompts(train, args.out / "train-prompts.jsonl")
        heldout_file = write_prompts(heldout, args.out / "heldout-prompts.jsonl")
    for spec in [] if args.compare_only else args.specs:
        started = time.time()
        run = train_personality(
            Config(
                spec=spec,
                policy=args.policy,
                prompts=str(args.out / "train-prompts.jsonl"),
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

    name = ""
    if args.compare_only:
        stem = (args.eval_prompts or heldout_file).name.split(".")[0]
        name = f"-{stem}-t{args.eval_temperature:g}x{args.eval_replies}"
    eval_file = args.eval_prompts or heldout_file
    # all of --eval-prompts unless --eval-n says otherwise
    n_eval = args.eval_n or (None if args.eval_prompts else args.heldout_prompts)
    started = time.time()
    # start first, so every difference is measured from it; then the two against each other,
    # from the same replies
    report = compare_runs(
        [args.policy, *runs],
        str(eval_file),
        n_prompts=n_eval,
        max_new_tokens=args.max_new_tokens,
        samples=3,
        contrasts=[(2, 1)],
        temperature=args.eval_temperature,
        replies_per_prompt=args.eval_replies,
        seed=args.seed,
        replies_out=args.out / f"replies{name}.jsonl",
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
        **({"train_prompts": len(train)} if train is not None else {"compare_only": True}),
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
    result_file = args.out / (f"compare{name}.json" if name else "result.json")
    result_file.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(format_comparison(report))
    print(json.dumps({"result": str(result_file), "seconds": seconds}))
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
