"""Attention backends on a GPU: time and NaN gradients of reward-model micro-batches.

The first GPU run of `make bench-reward` (H100, torch 2.11, bf16) took about 2 s per step of 16
pairs and its gradients turned NaN at step 24. Both point at PyTorch's cuDNN attention backend,
which SDPA picks by default on Hopper when a mask is passed: it builds an execution plan for
every new shape (dynamic padding makes nearly every micro-batch a new shape), and its backward
returns NaN for some masked rows (pytorch/pytorch#196678: sequence length % 128 == 64 and a row
whose log-sum-exp is very negative, which a left-padded row is). This script runs the same
micro-batches (the HH pairs of the benchmark, shared-prefix scoring, bf16 autocast) with the
default backends and with cuDNN attention disabled, and reports seconds per micro-batch, how
many produced a non-finite gradient, and the same with one fixed shape.

    python benchmarks/sdpa_backends.py --json        # needs CUDA
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-dev.jsonl.gz"


def run(model, batches, pad_id, device) -> dict:
    import torch

    from rlhfkit.train.reward import pair_scores

    times, bad = [], 0
    for chunk in batches:
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            chosen, rejected = pair_scores(model, chunk, pad_id, device)
        loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        bad += int(not all(torch.isfinite(g).all() for g in grads))
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    steady = times[2:] or times
    return {
        "micro_batches": len(times),
        "seconds_per_micro_batch": round(sum(steady) / len(steady), 4),
        "first_two_seconds": [round(t, 3) for t in times[:2]],
        "nonfinite_gradients": bad,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=HH)
    parser.add_argument("--micro-batches", type=int, default=40)
    parser.add_argument("--micro", type=int, default=4, help="pairs per micro-batch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("sdpa_backends.py needs a CUDA device", file=sys.stderr)
        return 2
    from rlhfkit.data import read_preferences
    from rlhfkit.models.heads import RewardModel, load_reward_model
    from rlhfkit.train.reward import encode_pair

    rm = load_reward_model(args.model, heads=["preference"], seed=0)
    tok = rm.tokenizer
    model = RewardModel(rm.model).cuda().train()
    device = torch.device("cuda")
    pairs = read_preferences(str(args.data))[: args.micro_batches * args.micro]
    encoded = [encode_pair(tok, p, 512, []) for p in pairs]
    varied = [encoded[i : i + args.micro] for i in range(0, len(encoded), args.micro)]
    fixed_pair = max(encoded, key=len)
    fixed = [[fixed_pair] * args.micro for _ in range(10)]
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for name, cudnn in (("default", True), ("no_cudnn", False)):
        torch.backends.cuda.enable_cudnn_sdp(cudnn)
        result[name] = {
            "varied_shapes": run(model, varied, tok.pad_token_id, device),
            "one_shape": run(model, fixed, tok.pad_token_id, device),
        }
    torch.backends.cuda.enable_cudnn_sdp(True)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
