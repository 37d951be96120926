"""TRL's side of ``benchmarks/vs_trl.py``: one task, run in TRL's own virtualenv.

Not imported by rlhfkit and never run by the test suite: ``vs_trl.py`` starts it as
``benchmarks/.venv-trl/bin/python benchmarks/_trl_side.py SPEC.json`` and reads the result file
named in the spec. The spec (written by ``vs_trl.py``) holds the task, the model and data paths
and the shared settings (max length, batch, steps, generation length, threads, seed).

What is measured, the same way as on our side: the wall-clock time at the end of every
optimizer step (``on_step_end``), and running counts of the work done up to then: ``units``
(pairs for reward/DPO, non-padding tokens for SFT, samples for RLOO) and ``tokens`` (non-padding
tokens through the model, for the FLOP estimate). The trainers are TRL's own, unmodified; the
counts come from thin overrides that read the batch and call the original method.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    import torch

    torch.set_num_threads(spec["threads"])
    import datasets
    import transformers
    import trl
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )

    task = spec["task"]
    total = spec["warmup"] + spec["steps"]
    counts = {"units": 0, "tokens": 0}
    marks: list[dict] = []
    lengths: list[float] = []

    class StepMarks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append({"t": time.perf_counter(), **counts})

    common = dict(
        output_dir=str(Path(spec["work"]) / f"trl-{task}"),
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        max_steps=total,
        learning_rate=1e-6,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=spec["seed"],
        dataloader_num_workers=0,
        disable_tqdm=True,
        bf16=False,
        # TRL's configs turn gradient checkpointing on by default; off, TRL does the same work
        # as our side (which never recomputes activations) unless the spec asks for TRL's default
        gradient_checkpointing=spec.get("trl_gradient_checkpointing", False),
    )
    tok = AutoTokenizer.from_pretrained(spec["model"])

    def load_json(path: str):
        return datasets.load_dataset("json", data_files=path, split="train")

    def attention_tokens(inputs) -> int:
        return int(inputs["attention_mask"].sum())

    if task == "reward":

        class Trainer(trl.RewardTrainer):
            def compute_loss(self, model, inputs, *args, **kwargs):
                if model.training:
                    counts["units"] += inputs["input_ids"].shape[0] // 2  # chosen + rejected
                    counts["tokens"] += attention_tokens(inputs)
                return super().compute_loss(model, inputs, *args, **kwargs)

        model = AutoModelForSequenceClassification.from_pretrained(
            spec["model"], num_labels=1, dtype=torch.float32
        )
        model.config.pad_token_id = tok.pad_token_id
        config = trl.RewardConfig(max_length=spec["max_length"], **common)
        trainer = Trainer(
            model=model, args=config, train_dataset=load_json(spec["pairs"]), processing_class=tok
        )
    elif task == "sft":

        class Trainer(trl.SFTTrainer):
            def compute_loss(self, model, inputs, *args, **kwargs):
                if model.training:
                    n = attention_tokens(inputs)
                    counts["units"] += n
                    counts["tokens"] += n
                return super().compute_loss(model, inputs, *args, **kwargs)

        model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
        config = trl.SFTConfig(max_length=spec["max_length"], **common)
        trainer = Trainer(
            model=model, args=config, train_dataset=load_json(spec["demos"]), processing_class=tok
        )
    elif task == "dpo":

        class Trainer(trl.DPOTrainer):
            def compute_loss(self, model, inputs, *args, **kwargs):
                if model.training:
                    counts["units"] += inputs["input_ids"].shape[0] // 2
                    counts["tokens"] += attention_tokens(inputs)
                return super().compute_loss(model, inputs, *args, **kwargs)

        model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
        config = trl.DPOConfig(max_length=spec["max_length"], beta=0.1, **common)
        trainer = Trainer(
            model=model,
            args=config,
            train_dataset=load_json(spec["dpo_pairs"]),
            processing_class=tok,
        )
    elif task == "rloo":

        class Trainer(trl.RLOOTrainer):
            def _generate_and_score_completions(self, *args, **kwargs):
                out = super()._generate_and_score_completions(*args, **kwargs)
                # only training generates here (no evaluation set is given)
                completion = out["completion_mask"]  # (samples, completion_len)
                counts["units"] += completion.shape[0]
                counts["tokens"] += int(out["prompt_mask"].sum() + completion.sum())
                lengths.append(completion.sum(-1).float().mean().item())
                return out

        model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
        config = trl.RLOOConfig(
            num_generations=spec["group_size"],
            max_completion_length=spec["max_new_tokens"],
            temperature=spec["temperature"],
            beta=spec["kl_coef"],
            steps_per_generation=1,
            **common,
        )
        prompts = load_json(spec["prompts"]).select_columns(["prompt"])
        trainer = Trainer(
            model=model,
            reward_funcs=spec["reward_model"],
            args=config,
            train_dataset=prompts,
            processing_class=tok,
        )
    else:
        raise SystemExit(f"_trl_side.py: unknown task {task!r}")

    trainer.add_callback(StepMarks())
    trainer.train()
    result = {
        "side": "trl",
        "task": task,
        "marks": marks,
        "response_lengths": lengths,
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "datasets": datasets.__version__,
        },
        "threads": torch.get_num_threads(),
    }
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: _trl_side.py SPEC.json (started by benchmarks/vs_trl.py)")
    main(sys.argv[1])
