"""Run directories written by hand in the formats of rlhfkit.train.run (SFT -> reward -> PPO), and
a small store with raters, pay, gold items and judgments made through the store's functions."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

SCRIPT = "<script>alert('x')</script>"
LONG_REPLY = "word " * 5000


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_run(
    path: Path,
    kind: str,
    inputs: dict,
    metrics: list[dict],
    *,
    extra: dict | None = None,
    evaluation: dict | None = None,
    config: dict | None = None,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config or {"seed": 0}))
    with open(path / "metrics.jsonl", "w") as fh:
        for step, row in enumerate(metrics, 1):
            fh.write(json.dumps({"step": step, "time": step * 1.5, **row}) + "\n")
    prov = {
        "kind": kind,
        "created": "2025-01-02T03:04:05Z",
        "code_version": "rlhfkit 0.1.0 (abc1234)",
        "python": "3.11.7",
        "torch": "2.13.0+cpu",
        "inputs": inputs,
        **(extra or {}),
    }
    (path / "provenance.json").write_text(json.dumps(prov, indent=2))
    if evaluation is not None:
        (path / "eval.json").write_text(json.dumps(evaluation, indent=2))
    (path / "model").mkdir(exist_ok=True)
    return path


def write_pairs(path: Path, n_items: int = 20, raters: int = 3, seed: int = 0) -> Path:
    """Judged pairs, three raters per item, who mostly prefer the longer reply."""
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for item in range(n_items):
            long, short = "a careful answer " * rng.randint(2, 6), "no"
            for r in range(raters):
                chosen, rejected = (short, long) if rng.random() < 0.2 else (long, short)
                rec = {
                    "prompt": [{"role": "user", "content": f"question {item}"}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    "rater_id": f"rater-{r}",
                    "item_id": f"item-{item}",
                }
                fh.write(json.dumps(rec) + "\n")
    return path


def write_chain(root: Path, *, ppo_config: dict | None = None) -> dict[str, Path]:
    """SFT, reward and PPO runs under ``root/runs``, linked as the trainers link them."""
    runs = root / "runs"
    demos = root / "demos.jsonl"
    demos.write_text(
        "".join(
            json.dumps({"prompt": f"hello {i}", "completion": f"hi there {i}"}) + "\n"
            for i in range(12)
        )
    )
    pairs = write_pairs(root / "pairs.jsonl")
    sft = write_run(
        runs / "sft",
        "sft",
        {
            "model": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct"},
            "data": {"path": str(demos), "sha256": sha(demos), "bytes": demos.stat().st_size},
        },
        [{"train/loss": 3.0 - 0.2 * i, "train/lr": 1e-5} for i in range(8)],
        extra={"examples": 12, "raters": {"raters": 0}},
    )
    rm = write_run(
        runs / "rm",
        "reward",
        {
            "model": {"path": str(sft / "model"), "parent_run": str(sft)},
            # recorded as given on the command line, relative to where training ran
            "data": {"path": "pairs.jsonl", "sha256": sha(pairs), "bytes": pairs.stat().st_size},
        },
        [{"train/loss": 0.69 - 0.05 * i, "train/accuracy": 0.5 + 0.05 * i} for i in range(8)],
        extra={
            "pairs": 60,
            "train_pairs": 45,
            "heldout_pairs": 15,
            "heads": ["preference"],
            "raters": {
                "raters": 3,
                "judgments": 60,
                "top_rater_share": 0.3333,
                "per_rater": {"rater-0": 20, "rater-1": 20, "rater-2": 20},
            },
        },
        evaluation={
            "train_pairs": 45,
            "heldout": {"accuracy": 0.7123, "n": 15, "mean_margin": 0.912, "ece": 0.0456},
        },
    )
    sample_prompts = ["What is 2+2?", "Write a poem", "Tell me a secret"]
    ppo = write_run(
        runs / "ppo",
        "ppo",
        {
            "policy": {"path": "runs/sft/model", "parent_run": "runs/sft"},
            "reward": {"path": "runs/rm/model", "parent_run": "runs/rm"},
            "prompts": {"path": str(demos), "sha256": sha(demos), "bytes": 100},
        },
        [
            {
                "objective/scores": -0.5 + 0.1 * i,
                "objective/kl": 0.05 * i * i,
                "objective/rlhf_reward": -0.5 + 0.08 * i,
                "response/length": 20.0 + i,
                "response/eos_share": 0.9,
                "policy/approxkl": 0.01,
            }
            for i in range(10)
        ],
        extra={
            "prompts": 12,
            "reward_normalization": {"heads": ["preference"], "offset": [0.25], "scale": [1.5]},
        },
        evaluation={
            "before": {
                "reward": 0.0123,
                "reward_sem": 0.1,
                "length": 21.5,
                "eos_share": 0.875,
                "n": 3,
                "samples": [{"prompt": p, "reply": "plain answer"} for p in sample_prompts],
            },
            "after": {
                "reward": 0.8765,
                "reward_sem": 0.1,
                "length": 30.25,
                "eos_share": 0.9,
                "n": 3,
                "samples": [
                    {"prompt": sample_prompts[0], "reply": "4 " + SCRIPT},
                    {"prompt": sample_prompts[1], "reply": LONG_REPLY},
                    {"prompt": sample_prompts[2], "reply": "see https://evil.example/x"},
                ],
            },
        },
        config=ppo_config,
    )
    return {"sft": sft, "rm": rm, "ppo": ppo, "pairs": pairs, "demos": demos}


def make_store(url: str) -> int:
    """A project with 8 ordinary and 2 gold items, judged 3 times each by 4 raters (two gave
    their country); returns the project id. The project's name carries markup."""
    from rlhfkit.store import (
        JudgmentInput,
        ProjectSettings,
        add_items,
        create_project,
        make_engine,
        next_task,
        submit_judgment,
        upgrade,
    )
    from rlhfkit.store.projects import add_member
    from rlhfkit.store.users import create_user, update_profile

    engine = make_engine(url)
    upgrade(engine)
    pid = create_project(
        engine,
        ProjectSettings(
            name=f"round {SCRIPT}",
            overlap_k=3,
            gold_share=0.3,
            pay_per_comparison_cents=20,
            min_hourly_wage_cents=1500,
        ),
    )
    items = [
        {"prompt": f"q{i}", "response_a": "long answer " * (i + 2), "response_b": "short"}
        for i in range(8)
    ]
    items += [{"prompt": "gold", "response_a": "right", "response_b": "wrong", "gold": "A"}] * 2
    add_items(engine, pid, items)
    raters = []
    for n, country in enumerate(["IN", "US", None, None]):
        uid = create_user(engine, f"rater{n}", "password1")
        add_member(engine, pid, uid)
        if country:
            update_profile(engine, uid, True, {"country": country})
        raters.append(uid)
    rng = random.Random(1)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    k = 0
    for _ in range(20):
        for uid in raters:
            task = next_task(engine, pid, uid, now=t0, rng=rng)
            if task is None:
                continue
            k += 1
            choice = "A" if rng.random() < 0.8 else "B"
            data = JudgmentInput(f"key-{k}", choice, time_on_task_ms=30_000)
            submit_judgment(engine, task.assignment_id, uid, data, now=t0 + timedelta(seconds=40))
    engine.dispose()
    return pid
