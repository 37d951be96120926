"""How often a constitutional AI labeler agrees with human labels (PandaLM and HH-RLHF).

PandaLM (``testset-v1.json``): the human label of an item is the majority of its three votes;
items whose majority is a tie, or that have no majority, are left out. HH-RLHF harmless-base
(``harmless-base-dev.jsonl.gz``): the crowdworker's ``chosen`` reply. A deterministic sample
of ``--n`` items from each; each pair is judged with one principle drawn per pair (as in Bai et
al. 2022) in both orders (see ``rlhfkit.personality.constitution``). Two labeler-free baselines
put the figure in context: "longer reply wins" and a coin (0.5).

Usage::

    .venv/bin/python benchmarks/constitution_agreement.py --n 100 --labeler default \\
        --json /tmp/constitution_agreement.json

Agreement is reported with a 95 % Wilson interval; ties of the labeler (P = 0.5 exactly) count
as half agreement.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def pandalm_items(path: Path, n: int, seed: int):
    """(pair with chosen = the majority's winner) for a sample of decided items."""
    from rlhfkit.data import read_preferences

    by_item = {}
    for pair in read_preferences(path, "pandalm"):
        by_item.setdefault(pair.item_id, pair)
    decided = []
    for pair in by_item.values():
        votes = Counter(pair.meta["votes"].values())
        winner, count = votes.most_common(1)[0]
        if count < 2 or winner == 0:
            continue
        # the annotator's pair is (chosen, rejected) in its own vote's order; re-derive
        first, second = _responses(pair)
        chosen, rejected = (first, second) if winner == 1 else (second, first)
        decided.append(_with(pair, chosen, rejected))
    return random.Random(seed).sample(decided, min(n, len(decided))), len(by_item), len(decided)


def _responses(pair):
    """(response1, response2) of a PandaLM pair from its annotator's vote."""
    vote = pair.meta["votes"][pair.rater_id]
    return (pair.rejected, pair.chosen) if vote == 2 else (pair.chosen, pair.rejected)


def _with(pair, chosen, rejected):
    from dataclasses import replace

    return replace(pair, chosen=chosen, rejected=rejected, rater_id="human-majority", tie=False)


def hh_items(path: Path, n: int, seed: int):
    from rlhfkit.data import read_preferences

    pairs = read_preferences(path, "hh")
    for i, pair in enumerate(pairs):
        pair.item_id = pair.item_id or str(i)
    return random.Random(seed).sample(pairs, min(n, len(pairs))), len(pairs)


def agreement(judged, items) -> dict:
    """Agreement of the labeler's verdicts with the items' chosen side."""
    k = 0.0
    ties = 0
    for pair in judged:
        p = pair.meta["p_input_chosen"]
        if p == 0.5:
            ties += 1
            k += 0.5
        else:
            k += p > 0.5
    n = len(judged)
    low, high = wilson(k, n)
    longer = sum(
        0.5 if len(x.chosen) == len(x.rejected) else float(len(x.chosen) > len(x.rejected))
        for x in items
    )
    per = {}
    for pair in judged:
        for name, p in pair.meta["p_input_chosen_by_principle"].items():
            agree = 0.5 if p == 0.5 else float(p > 0.5)
            per.setdefault(name, []).append(agree)
    mean_p = sum(pair.meta["p_input_chosen"] for pair in judged) / max(n, 1)
    return {
        "n": n,
        "agreement": round(k / n, 4) if n else None,
        "ci95": [round(low, 4), round(high, 4)],
        "ties": ties,
        "mean_p_human_choice": round(mean_p, 4),
        "baseline_longer_wins": round(longer / len(items), 4),
        "per_principle": {
            name: {"n": len(v), "agreement": round(sum(v) / len(v), 4)}
            for name, v in sorted(per.items())
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="items per data set")
    parser.add_argument("--labeler", default="default", help="local model (default, tiny, dir)")
    parser.add_argument("--endpoint", default=None, help="OpenAI-compatible base URL instead")
    parser.add_argument("--endpoint-model", default=None, help="model name at the endpoint")
    parser.add_argument("--constitution", default="helpful-harmless")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", default="pandalm,hh", help="comma-separated: pandalm, hh")
    parser.add_argument("--json", default=None, help="write the result here as well")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args(argv)

    import torch

    from rlhfkit.personality.constitution import judge_pairs, load_constitution, make_labeler

    if args.threads:
        torch.set_num_threads(args.threads)
    constitution = load_constitution(args.constitution)
    labeler = make_labeler(args.labeler, endpoint=args.endpoint, endpoint_model=args.endpoint_model)
    result = {
        "labeler": labeler.name,
        "method": labeler.method,
        "constitution": constitution.name,
        "principles_per_pair": 1,
        "orders": 2,
        "seed": args.seed,
        "sets": {},
    }
    for name in args.sets.split(","):
        if name == "pandalm":
            path = DATA / "pandalm" / "testset-v1.json"
            items, total, decided = pandalm_items(path, args.n, args.seed)
            extra = {"items_in_file": total, "items_with_a_non_tie_majority": decided}
        elif name == "hh":
            path = DATA / "hh-rlhf" / "harmless-base-dev.jsonl.gz"
            items, total = hh_items(path, args.n, args.seed)
            extra = {"items_in_file": total}
        else:
            parser.error(f"unknown set {name!r}")
        started = time.time()

        def progress(done, total_jobs, name=name, started=started):
            rate = (time.time() - started) / max(done, 1)
            print(
                f"[{name}] {done}/{total_jobs} questions, {rate:.1f} s each",
                file=sys.stderr,
                flush=True,
            )

        judged = judge_pairs(
            labeler, constitution, items, seed=args.seed, batch_size=8, progress=progress
        )
        entry = agreement(judged, items)
        entry.update(extra)
        entry["seconds"] = round(time.time() - started, 1)
        result["sets"][name] = entry
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))
    for name, entry in result["sets"].items():
        print(
            f"| {name} | {entry['n']} | {entry['agreement']:.3f}"
            f" [{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}] | {entry['baseline_longer_wins']:.3f}"
            f" | {entry['mean_p_human_choice']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
