"""The helpful-harmless trade-off of the default model (figures in docs/tradeoff.md).

Runs ``rlhfkit.evaluate.tradeoff.sweep`` in fast mode (best-of-n reranking, no training) on
SmolLM2-135M-Instruct with a bounded sample of prompts, writes the table and plot to ``--out``
and copies the plot to ``docs/tradeoff.png``.

Helpfulness needs a reward. No helpfulness reward model for the default model exists on this
machine, and training one on two shared CPU cores did not fit the budget, so by default the
reward is a lexical proxy written as a personality spec (``--reward`` overrides it with a real
reward model): the attributes that predicted OASST volunteers' rankings in docs/personality.md
(length, sentiment, formatting). It has no refusal term, so helpfulness is not refusal by
construction. Read its numbers as "what a length-and-tone reward prefers", not as quality.

Usage::

    .venv/bin/python benchmarks/tradeoff.py --n-prompts 40 --out runs/tradeoff-default
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROXY_SPEC = """\
name: helpfulness-proxy
description: >
  Lexical stand-in for a helpfulness reward model: longer, more positive, more structured
  replies score higher (what OASST volunteers' rankings went with; see docs/personality.md).
weights:
  length: 1.0
  sentiment: 0.5
  formatting: 0.5
kl_budget: 6.0
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="default")
    parser.add_argument("--reward", default=None, help="reward model dir or spec (default: proxy)")
    parser.add_argument("--n-prompts", type=int, default=40)
    parser.add_argument("--calibration-prompts", type=int, default=20)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", default="runs/tradeoff-default")
    parser.add_argument("--plot-to", default=str(ROOT / "docs" / "tradeoff.png"))
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from rlhfkit.evaluate.tradeoff import Config, format_table, sweep, write_report

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reward = args.reward
    if reward is None:
        spec = out / "helpfulness-proxy.yaml"
        spec.write_text(PROXY_SPEC, encoding="utf-8")
        reward = str(spec)
    cfg = Config(
        policy=args.policy,
        reward=reward,
        n_prompts=args.n_prompts,
        calibration_prompts=args.calibration_prompts,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        out=out,
    )
    started = time.time()
    report = sweep(cfg)
    report["seconds"] = round(time.time() - started, 1)
    report["helpfulness_reward"] = (
        "lexical proxy (benchmarks/tradeoff.py)" if args.reward is None else reward
    )
    paths = write_report(report, out / "tradeoff")
    if args.plot_to:
        shutil.copyfile(paths["plot"], args.plot_to)
        paths["copied_plot"] = args.plot_to
    print(format_table(report))
    print(json.dumps({**paths, "seconds": report["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
