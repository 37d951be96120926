"""How close batched generation is to the machine's floor: the weight reads of each decode step.

Times three things on the same model, batch and number of new tokens:

1. ``rlhfkit.models.generate`` (Hugging Face ``generate`` with a KV cache, sampling);
2. a plain decode loop: the model's forward over one new token a step with a ``DynamicCache``,
   greedy, no logits processors (what a hand-written generator could at best save), after a
   prefill of random tokens as wide as the chat prompts (timed apart, and taken out of
   ``generate``'s per-token figure, which is divided by the steps it actually ran);
3. the bare matrix products of a decode step: every linear layer of every block and the output
   projection, ``F.linear`` on a (batch, 1, hidden) input, nothing else. On a CPU at small batch
   they read every weight once per token, so this is the memory-bound floor of any generator
   in this precision.

    python benchmarks/decode_floor.py                  # default model, 8 x 64 tokens, 2 threads
    python benchmarks/decode_floor.py --fast --json    # tiny model (smoke mode, tested)
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def measure(model_name: str, batch: int, new_tokens: int, threads: int) -> dict:
    from transformers import DynamicCache

    from rlhfkit.models import generate, load_policy

    if threads:
        torch.set_num_threads(threads)
    policy = load_policy(model_name)
    model = policy.model.eval()
    prompts = [
        [{"role": "user", "content": f"Tell me about topic number {i} in a few sentences."}]
        for i in range(batch)
    ]
    generate(policy, prompts, max_new_tokens=2, temperature=0.7, seed=0)  # warm-up
    t = time.perf_counter()
    gen = generate(policy, prompts, max_new_tokens=new_tokens, temperature=0.7, seed=0)
    generate_s = time.perf_counter() - t
    generate_steps = gen.response_ids.shape[1]  # fewer than asked when every row ended early
    prompt_len = gen.prompt_ids.shape[1]  # the same prompt width for the plain loop below

    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, prompt_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        t = time.perf_counter()
        token = (
            model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        )
        prefill_s = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(new_tokens):
            logits = model(
                input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1
            ).logits
            token = logits[:, -1:].argmax(-1)
        loop_s = time.perf_counter() - t

        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        wide = {m.in_features: torch.randn(batch, 1, m.in_features) for m in linears}
        t = time.perf_counter()
        for _ in range(new_tokens):
            for m in linears:
                torch.nn.functional.linear(wide[m.in_features], m.weight)
        floor_s = time.perf_counter() - t
    weight_bytes = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    return {
        "model": model_name,
        "batch": batch,
        "new_tokens": new_tokens,
        "threads": torch.get_num_threads(),
        "prompt_tokens": prompt_len,
        "generate_s": round(generate_s, 6),
        "generate_steps": generate_steps,
        "prefill_s": round(prefill_s, 6),
        "plain_loop_s": round(loop_s, 6),
        "bare_linear_s": round(floor_s, 6),
        "ms_per_step": {
            # generate's time includes its prefill: take out the plain loop's, same width
            "generate": round(1000 * max(0.0, generate_s - prefill_s) / generate_steps, 1),
            "plain_loop": round(1000 * loop_s / new_tokens, 1),
            "bare_linear": round(1000 * floor_s / new_tokens, 1),
        },
        "linear_weight_mb": round(weight_bytes / 1e6, 1),
        "implied_gb_per_s": round(weight_bytes * new_tokens / floor_s / 1e9, 1),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    p.add_argument("--fast", action="store_true", help="tiny model, 4 tokens (smoke mode)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.fast:
        args.model, args.new_tokens = "tiny", 4
    r = measure(args.model, args.batch, args.new_tokens, args.threads)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    ms = r["ms_per_step"]
    print(
        f"{r['model']}: batch {r['batch']} x {r['new_tokens']} tokens, {r['threads']} threads\n"
        f"  generate     {r['generate_s']:7.2f} s  {ms['generate']:6.1f} ms/token "
        f"({r['generate_steps']} steps, prefill {r['prefill_s']:.2f} s taken out)\n"
        f"  plain loop   {r['plain_loop_s']:7.2f} s  {ms['plain_loop']:6.1f} ms/token\n"
        f"  bare linear  {r['bare_linear_s']:7.2f} s  {ms['bare_linear']:6.1f} ms/token "
        f"({r['linear_weight_mb']} MB of weights a step, {r['implied_gb_per_s']} GB/s)"
    )


if __name__ == "__main__":
    main()
