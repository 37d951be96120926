"""Side by side: the attribute profile of several trained personalities on held-out prompts.

Each run's policy (``RUN/model``, or any model name: ``default``, a directory, ``tiny``) answers
the same prompts, greedily by default, or ``replies_per_prompt`` times each sampled at
``temperature`` (the way DPO and PPO saw the policy while training); every reply is scored on
every attribute, a prompt's score is the mean over its replies, and the profile is the mean
score per attribute with a 95 % confidence interval (Student's t over prompts). Prompts a run
was trained on (``prompts`` in its ``config.yaml`` or ``personality.json``, and those of its
training ``data``, such as DPO's ranked pairs) are left out, so the
profile is measured on held-out prompts. Every later run is also compared with the first on the
same prompts (paired differences with 95 % intervals), so list the starting policy first.

Example::

    report = compare_runs(["runs/personality-concise-ppo", "runs/personality-warm-and-polite-ppo"],
                          prompts="heldout.jsonl", n_prompts=40,
                          temperature=1.0, replies_per_prompt=4)
    print(format_comparison(report))
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from rlhfkit.errors import InputError
from rlhfkit.personality.scorers import ATTRIBUTES, score_all

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def mean_ci(values: list[float], level: float = 0.95) -> dict[str, float]:
    """Mean and a ``level`` Student-t confidence interval: ``{"mean", "low", "high", "n"}``.

    Example::

        >>> mean_ci([0.2, 0.4, 0.6])["mean"]
        0.4
    """
    from scipy import stats

    n = len(values)
    if n == 0:
        raise InputError("no values to summarise")
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "low": mean, "high": mean, "n": 1}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def _run_info(run: str) -> tuple[str, str, dict[str, Any]]:
    """(label, model to load, personality.json or {}) for a run directory or a model name."""
    path = Path(run)
    if not path.exists() and run not in ("default", "tiny") and not _HUB_ID.match(run):
        raise InputError(
            f"{run}: no such run directory (expected a run, a model directory,"
            " default, tiny or a hub id)"
        )
    info: dict[str, Any] = {}
    if path.is_dir() and (path / "personality.json").is_file():
        try:
            info = json.loads((path / "personality.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{path / 'personality.json'}: not valid JSON") from None
    if path.is_dir() and (path / "model").is_dir():
        model = str(path / "model")
    elif path.is_dir() and not (path / "config.json").is_file():
        raise InputError(f"{run}: not a run directory (no model/) nor a model directory")
    else:
        model = run
    label = info.get("personality") or (path.name if path.is_dir() else run)
    return label, model, info


def _training_prompts(run: str) -> set[str]:
    """Every prompt a run trained on, as a set of keys: the prompts file of its
    ``personality.json`` or ``config.yaml`` (PPO), and the prompts of its training data
    (``data`` in ``config.yaml``: DPO's ranked pairs, SFT's demonstrations)."""
    from rlhfkit.train.base import read_prompts

    sources = []
    for name in ("personality.json", "config.yaml"):
        path = Path(run) / name
        if not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}  # JSON is YAML
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(data, dict):
            sources += [data.get("prompts"), data.get("data")]
    prompts: set[str] = set()
    for source in {s for s in sources if isinstance(s, str) and Path(s).is_file()}:
        try:
            prompts |= {repr(p) for p in read_prompts(source)}
        except InputError:
            continue  # a training file that no longer reads cannot be matched against
    return prompts


def compare_runs(
    runs: list[str],
    prompts: str,
    *,
    n_prompts: int | None = 40,
    max_new_tokens: int = 64,
    samples: int = 3,
    exclude_training_prompts: bool = True,
    contrasts: list[tuple[int, int]] | None = None,
    temperature: float = 0.0,
    replies_per_prompt: int = 1,
    seed: int = 0,
    replies_out: str | Path | None = None,
) -> dict[str, Any]:
    """Attribute profiles (mean and 95 % CI per attribute) of each run's replies to the first
    ``n_prompts`` (None: all) held-out prompts, each later run's paired difference from the first (``differences``: mean
    and 95 % CI over prompts of its score minus the first run's on the same prompt), plus
    ``samples`` example replies per run. ``contrasts`` adds more paired differences from the
    same replies: ``(i, j)`` is run i minus run j (indices into ``runs``). ``temperature`` 0
    decodes greedily (one reply per prompt); above 0 each run samples ``replies_per_prompt``
    replies per prompt from the same ``seed``, and a prompt's score is their mean, so the
    intervals stay over prompts. ``replies_out`` writes every reply as a JSON line (``label``,
    ``prompt_index``, ``prompt``, ``draw``, ``reply`` and its ``scores``), written whole at the
    end. Example in the module docstring.
    """
    from rlhfkit.models import generate_replies, load_policy
    from rlhfkit.train.base import read_prompts

    if not runs:
        raise InputError("name at least one run to compare")
    pairs = [(i, 0) for i in range(1, len(runs))] + list(contrasts or [])
    for i, j in pairs:
        if not (0 <= i < len(runs) and 0 <= j < len(runs)) or i == j:
            raise InputError(
                f"contrast ({i}, {j}): expected two different run indices from 0 to {len(runs) - 1}"
            )
    check_decoding(temperature, replies_per_prompt, seed)
    if replies_out is not None:
        from rlhfkit.data.writer import check_output_path

        check_output_path(Path(replies_out))
    infos = [_run_info(r) for r in runs]  # bad run names fail before anything is generated
    pool = read_prompts(prompts)
    excluded = set()
    if exclude_training_prompts:
        for run in runs:
            excluded |= _training_prompts(run)
    held_out = [p for p in pool if repr(p) not in excluded][:n_prompts]
    if not held_out:
        raise InputError(
            f"{prompts}: no held-out prompts left (every prompt was used in training);"
            " pass other prompts"
        )
    labels = _unique([label for label, _, _ in infos])
    results: list[dict[str, Any]] = []
    every_reply: list[dict[str, Any]] = []
    for run, label, (_, model, info) in zip(runs, labels, infos, strict=True):
        policy = load_policy(model)
        k = replies_per_prompt
        drawn = generate_replies(
            policy,
            [p for p in held_out for _ in range(k)],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed if temperature > 0 else None,
        )
        every = score_all(drawn)
        # a prompt's score is the mean over its k replies: the unit of the intervals is the prompt
        scores = {
            a: [sum(v[i * k : i * k + k]) / k for i in range(len(held_out))]
            for a, v in every.items()
        }
        replies = drawn[::k]
        every_reply.extend(
            {
                "label": label,
                "prompt_index": i // k,
                "prompt": held_out[i // k][-1]["content"],
                "draw": i % k,
                "reply": text,
                "scores": {a: round(every[a][i], 4) for a in ATTRIBUTES},
            }
            for i, text in enumerate(drawn)
        )
        results.append(
            {
                "run": run,
                "label": label,
                "model": model,
                "method": info.get("method"),
                "weights": info.get("weights"),
                "profile": {a: _rounded(mean_ci(scores[a])) for a in ATTRIBUTES},
                "replies": replies,
                "scores": scores,
            }
        )
        del policy
    differences = [
        {
            "run": results[i]["label"],
            "minus": results[j]["label"],
            "difference": {
                a: _rounded(mean_ci(_minus(results[i]["scores"][a], results[j]["scores"][a])))
                for a in ATTRIBUTES
            },
        }
        for i, j in pairs
    ]
    if replies_out is not None:
        from rlhfkit.data.writer import write_jsonl

        write_jsonl(Path(replies_out), every_reply)
    return {
        "prompts": prompts,
        "n_prompts": len(held_out),
        "excluded_training_prompts": len(excluded),
        "temperature": temperature,
        "replies_per_prompt": replies_per_prompt,
        **({"seed": seed} if temperature > 0 else {}),
        "attributes": list(ATTRIBUTES),
        "runs": [{k: v for k, v in r.items() if k not in ("replies", "scores")} for r in results],
        "differences": differences,
        "samples": [
            {
                "prompt": held_out[i][-1]["content"],
                "replies": {r["label"]: r["replies"][i] for r in results},
            }
            for i in range(min(samples, len(held_out)))
        ],
    }


def check_decoding(temperature: float, replies_per_prompt: int, seed: int = 0) -> None:
    """InputError unless ``temperature``, ``replies_per_prompt`` and ``seed`` make a valid
    comparison (checked before any model is loaded; the benchmark checks before training)."""
    if isinstance(temperature, bool) or not (
        isinstance(temperature, (int, float)) and 0 <= temperature <= 10
    ):
        raise InputError(f"temperature: expected a number from 0 (greedy) to 10, got {temperature}")
    if isinstance(replies_per_prompt, bool) or not isinstance(replies_per_prompt, int):
        raise InputError(f"replies_per_prompt: expected a whole number, got {replies_per_prompt!r}")
    if replies_per_prompt < 1:
        raise InputError(f"replies_per_prompt: expected 1 or more, got {replies_per_prompt}")
    if temperature == 0 and replies_per_prompt > 1:
        raise InputError(
            f"replies_per_prompt: {replies_per_prompt} greedy replies to a prompt are all the"
            " same; sample them (temperature above 0) or ask for 1"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InputError(f"seed: expected a whole number from 0 to 2**63 - 1, got {seed!r}")


def _minus(xs: list[float], ys: list[float]) -> list[float]:
    return [x - y for x, y in zip(xs, ys, strict=True)]


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def _rounded(ci: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in ci.items()}


def format_comparison(report: dict[str, Any], width: int = 300) -> str:
    """The report as a text table (mean [95 % CI] per attribute and run) and sample replies."""
    labels = [r["label"] for r in report["runs"]]
    cell = 20
    k, temperature = report.get("replies_per_prompt", 1), report.get("temperature", 0)
    decoding = (
        "greedy replies"
        if not temperature
        else f"{k} repl{'y' if k == 1 else 'ies'} per prompt sampled at temperature"
        f" {temperature:g}, averaged per prompt"
    )
    lines = [
        f"{report['n_prompts']} held-out prompts from {report['prompts']}, {decoding}"
        f" (mean score [95% CI]; {report['excluded_training_prompts']} training prompts left out)",
        "",
        f"{'attribute':12s}" + "".join(f"{label[: cell - 1]:>{cell}s}" for label in labels),
    ]
    for attr in report["attributes"]:
        row = f"{attr:12s}"
        for r in report["runs"]:
            p = r["profile"][attr]
            row += f"{p['mean']:.2f} [{p['low']:.2f},{p['high']:.2f}]".rjust(cell)
        lines.append(row)
    for diff in report.get("differences", []):
        lines += ["", f"{diff['run']} minus {diff['minus']} (paired, same prompts):"]
        for attr in report["attributes"]:
            d = diff["difference"][attr]
            lines.append(f"  {attr:12s}{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
    for sample in report["samples"]:
        lines += ["", f"prompt: {_one_line(sample['prompt'], width)}"]
        for label in labels:
            lines.append(f"  {label}: {_one_line(sample['replies'][label], width)}")
    return "\n".join(lines)


def _one_line(text: str, width: int) -> str:
    # replies are untrusted: no control characters (terminal escapes) reach the screen
    text = "".join(ch for ch in " ".join(text.split()) if ch.isprintable())
    return text if len(text) <= width else text[: width - 1] + "…"
