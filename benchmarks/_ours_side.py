"""rlhfkit's side of ``benchmarks/vs_trl.py``: one task, run with the project's own virtualenv.

``vs_trl.py`` starts it as ``.venv/bin/python benchmarks/_ours_side.py SPEC.json``. It calls the
real trainers (``rlhfkit.train.<task>.train(Config(...))``) unmodified and measures them the
same way as ``_trl_side.py`` measures TRL: the wall-clock time at the end of every optimizer
step (when the trainer logs the step) and running counts of the work done up to then, ``units``
(pairs, non-padding tokens or samples) and ``tokens`` (non-padding tokens through the model).

The counts come from wrapping the functions each trainer calls by module name (``pack`` for
the batches it packs, ``generate`` for the rollouts): the wrappers count
and return the original result untouched. Tokens are those the trainer actually runs (a prompt
shared by both responses of a pair counts once). After the last timed step the run is stopped:
saving the model and the end-of-run evaluation are not part of a training step (TRL's side
saves nothing either).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path


class _Done(Exception):
    """Raised from the step log after the last timed step, to skip the end-of-run work."""


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    import torch

    torch.set_num_threads(spec["threads"])
    import accelerate
    import transformers

    import rlhfkit
    from rlhfkit.train import run as run_module
    from rlhfkit.train.run import code_version

    task = spec["task"]
    total = spec["warmup"] + spec["steps"]
    counts = {"units": 0, "tokens": 0}
    marks: list[dict] = []
    lengths: list[float] = []
    reference = {"seconds": 0.0, "pairs": 0}

    original_log = run_module.Run.log

    pairs_per_step = spec["batch_size"] if task in ("reward", "dpo") else 0

    def log(self, step, metrics):
        # every logged step trained one global batch: --batch-size pairs for reward and DPO
        counts["units"] += pairs_per_step
        # marked after the step's own logging, so the one-time TensorBoard set-up of the first
        # log falls into the warm-up step (TRL's side logs without TensorBoard)
        original_log(self, step, metrics)
        marks.append({"t": time.perf_counter(), **counts})
        if step >= total:
            raise _Done

    run_module.Run.log = log

    def count_packed(module, units_are_tokens: bool) -> None:
        """Count the real tokens of every batch ``module`` packs (a prompt laid down once for
        both responses of a pair counts once)."""
        original = module.pack

        def counted(documents, *args, **kwargs):
            packed = original(documents, *args, **kwargs)
            counts["tokens"] += packed.real_tokens
            counts["units"] += packed.real_tokens if units_are_tokens else 0
            return packed

        module.pack = counted

    def count_generated(module) -> None:
        """Count the samples (and prompt + response tokens) of each rollout ``generate``."""
        original = module.generate

        def counted(*args, **kwargs):
            gen = original(*args, **kwargs)
            counts["units"] += gen.response_ids.shape[0]
            counts["tokens"] += int(gen.prompt_mask.sum() + gen.response_mask.sum())
            lengths.append(gen.response_mask.sum(-1).float().mean().item())
            return gen

        module.generate = counted

    common = dict(
        out=Path(spec["work"]) / f"ours-{task}",
        max_length=spec["max_length"],
        batch_size=spec["batch_size"],
        max_steps=total,
        save_every=0,
        seed=spec["seed"],
    )
    rollout = dict(
        policy=spec["model"],
        reward=spec["reward_model"],
        prompts=spec["prompts"],
        max_new_tokens=spec["max_new_tokens"],
        max_prompt_length=spec["max_prompt_length"],
        temperature=spec["temperature"],
        kl_coef=spec["kl_coef"],
        # the normalisation samples are set-up work before step 1; keep them few
        normalize_samples=spec["batch_size"],
    )
    if task == "reward":
        from rlhfkit.train import reward as trainer

        count_packed(trainer, units_are_tokens=False)
        cfg = trainer.Config(model=spec["model"], data=spec["pairs"], **common)
    elif task == "sft":
        from rlhfkit.train import sft as trainer

        count_packed(trainer, units_are_tokens=True)
        cfg = trainer.Config(model=spec["model"], data=spec["demos"], **common)
    elif task == "dpo":
        from rlhfkit.train import dpo as trainer

        count_packed(trainer, units_are_tokens=False)
        original_reference = trainer.reference_logps

        def timed_reference(model, pairs, *args, **kwargs):
            # the reference pass runs once before step 1; vs_trl.py charges each timed pair
            # its share of it (TRL runs its reference model inside every step instead)
            before = dict(counts)
            start = time.perf_counter()
            out = original_reference(model, pairs, *args, **kwargs)
            reference["seconds"] += time.perf_counter() - start
            reference["pairs"] += len(pairs)
            counts.update(before)
            return out

        trainer.reference_logps = timed_reference
        cfg = trainer.Config(model=spec["model"], data=spec["dpo_pairs"], **common)
    elif task == "ppo":
        from rlhfkit.train import ppo as trainer

        count_generated(trainer)
        cfg = trainer.Config(**common, **rollout)
    elif task == "rloo":
        from rlhfkit.train import rloo as trainer

        count_generated(trainer)
        cfg = trainer.Config(group_size=spec["group_size"], **common, **rollout)
    else:
        raise SystemExit(f"_ours_side.py: unknown task {task!r}")

    with contextlib.suppress(_Done):
        trainer.train(cfg)
    result = {
        "side": "ours",
        "task": task,
        "marks": marks,
        "response_lengths": lengths,
        "reference": reference if task == "dpo" else None,
        "versions": {
            "rlhfkit": code_version() or rlhfkit.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "torch": torch.__version__,
        },
        "threads": torch.get_num_threads(),
    }
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: _ours_side.py SPEC.json (started by benchmarks/vs_trl.py)")
    main(sys.argv[1])
