"""Small synthetic data files for trainer tests (written into a test's tmp_path)."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = [
    "the",
    "cat",
    "dog",
    "sun",
    "rain",
    "tree",
    "apple",
    "book",
    "sky",
    "blue",
    "red",
    "green",
    "fast",
    "slow",
    "happy",
]


def _prompt(rng: random.Random) -> list[dict]:
    return [
        {"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))}
    ]


def write_demos(path: Path, n: int = 32, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n):
            p = _prompt(rng)
            reply = [{"role": "assistant", "content": "ok " + p[0]["content"]}]
            fh.write(json.dumps({"prompt": p, "completion": reply}) + "\n")
    return path


def write_pairs(path: Path, n: int = 32, seed: int = 0) -> Path:
    """Chosen replies are long and say "good"; rejected say "bad": easy to learn."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n):
            fh.write(
                json.dumps(
                    {
                        "prompt": _prompt(rng),
                        "chosen": [{"role": "assistant", "content": "good " * rng.randint(3, 6)}],
                        "rejected": [{"role": "assistant", "content": "bad"}],
                    }
                )
                + "\n"
            )
    return path
