"""Bias propagation: does a rater pool's taste for long answers end up in the policy?

Two simulated pools, identical except that one prefers longer answers
(configs/pools/balanced.yaml and configs/pools/length-loving.yaml), each label the SAME
candidate pairs through the rater platform (a real server process on loopback: accounts,
login, queue, judgments, export). From each pool's export a reward model is trained, and from
each reward model a short PPO run starts from the same policy. `rlhfkit audit propagation`
then measures the length coefficient at each stage with 95 % intervals:

1. raters: bias profile of the exported judgments (log-odds per unit of log(1 + words));
2. reward model: its preference on probe pairs that differ only in length (and the other
   probe attributes), same units;
3. policy: shift of mean log(1 + words) (and mean words) of its replies to held-out prompts
   from the starting policy's.

The contrast between the pools (length-loving minus balanced) is reported per stage. A null
result is reported as null.

Usage::

    python benchmarks/bias_propagation.py --fast --out runs/bias-propagation-fast   # ~minutes
    python benchmarks/bias_propagation.py --model default --out runs/bias-propagation

``--labels-from DIR`` reruns PPO and the audit from an earlier run's judgments and reward models;
with ``--audit-only`` also from its PPO runs (only the audit runs again).

``--fast`` uses the tiny random model and synthetic candidate replies (a smoke test of the
whole pipeline, used by tests/raters/test_propagation.py); ``--model default`` generates the
candidates with SmolLM2-135M-Instruct and trains its reward models and PPO runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from rlhfkit.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
POOLS = ("balanced", "length-loving")


@dataclass
class Settings:
    model: str
    pairs: int
    heldout: int
    overlap_k: int
    candidate_tokens: int
    rm_epochs: float
    rm_max_length: int
    rm_lr: float
    ppo_steps: int
    ppo_batch: int
    ppo_tokens: int
    ppo_lr: float
    samples: int
    seed: int
    ppo_eos_penalty: float | None = None
    """PPO's score for a reply that never ends. None (the default here) leaves the reward
    model's score: a penalty would itself reward short replies in both pools."""


# 160 pairs: with 32, the raters' length contrast between the pools (planted: about +0.9)
# came out anywhere from -0.12 to +1.46 over five runs, so a smoke run could not even show the
# planted difference; with 160 it was +0.58 to +0.92 over three.
FAST = dict(
    model="tiny", pairs=160, heldout=4, overlap_k=2, candidate_tokens=16, rm_epochs=1.0,
    rm_max_length=96, rm_lr=1e-3, ppo_steps=2, ppo_batch=4, ppo_tokens=8, ppo_lr=1e-4,
    samples=1, seed=0,
)  # fmt: skip
REAL = dict(
    model="default", pairs=160, heldout=32, overlap_k=2, candidate_tokens=64, rm_epochs=1.0,
    rm_max_length=256, rm_lr=1e-5, ppo_steps=10, ppo_batch=8, ppo_tokens=64, ppo_lr=1e-5,
    samples=2, seed=0,
)  # fmt: skip
"""Sized for a shared 2-core CPU (about an hour); raise --pairs/--ppo-steps on a GPU."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_prompts(n: int, fast: bool) -> list[list[dict]]:
    """Single-turn prompts from the shared data (self-instruct, OASST) in a fixed order; the
    synthetic questions when those files are absent or in --fast mode."""
    if not fast:
        from rlhfkit.train.base import read_prompts

        prompts = []
        for rel in ("self-instruct/seed_tasks.jsonl", "oasst/en_100_message.jsonl"):
            if (SHARED / rel).exists():
                prompts += [p for p in read_prompts(str(SHARED / rel)) if len(p) == 1]
        if len(prompts) >= n:
            return prompts[:n]
        log(f"only {len(prompts)} shared prompts; filling with synthetic questions")
    else:
        prompts = []
    from rlhfkit.raters.simulate import synthetic_items

    extra = [[{"role": "user", "content": q}] for q, _, _ in synthetic_items(n, seed=7)]
    return (prompts + extra)[:n]


def candidates(settings: Settings, prompts: list[list[dict]], fast: bool) -> list[tuple]:
    """Two replies per prompt: sampled from the model, or synthetic replies in --fast mode (a
    random tiny model writes token salad of one length, which no rater could judge)."""
    if fast:
        from rlhfkit.raters.simulate import synthetic_items

        made = synthetic_items(len(prompts), seed=settings.seed)
        return [(p, a, b) for p, (_, a, b) in zip(prompts, made, strict=True)]
    from rlhfkit.raters.propagation import sample_replies

    replies = sample_replies(
        settings.model, prompts, 2, settings.candidate_tokens, 1.0, settings.seed
    )
    return [(p, r[0], r[1]) for p, r in zip(prompts, replies, strict=True) if r[0] != r[1]]


def read_heldout(path: Path, n: int | None) -> list[list[dict]]:
    """The first ``n`` (all: None) prompts of a held-out file: any prompts file rlhfkit reads,
    MT-Bench's question.jsonl (first turns) among them."""
    from rlhfkit.train.base import read_prompts

    if not Path(path).is_file():
        raise InputError(f"--heldout-file {path}: no such file")
    prompts = read_prompts(str(path))
    return prompts[:n] if n is not None else prompts


def write_prompts(prompts: list[list[dict]], path: Path) -> None:
    """Prompts as TRL prompt-completion jsonl (the completion is not used by PPO/the audit)."""
    with path.open("w", encoding="utf-8") as fh:
        for p in prompts:
            fh.write(
                json.dumps({"prompt": p, "completion": [{"role": "assistant", "content": "-"}]})
            )
            fh.write("\n")


def contrast(a: dict | None, b: dict | None) -> dict | None:
    """b - a with a normal-approximation 95 % interval from the two intervals (independent
    estimates; conservative for the policy stage, whose two shifts share a reference: there
    ``contrast_paired``, the audit's paired comparison of the two policies, is the sharper
    test)."""
    if not a or not b or a["estimate"] is None or b["estimate"] is None:
        return None
    se = math.hypot((a["ci_high"] - a["ci_low"]) / 3.92, (b["ci_high"] - b["ci_low"]) / 3.92)
    d = b["estimate"] - a["estimate"]
    return {"estimate": d, "ci_low": d - 1.96 * se, "ci_high": d + 1.96 * se,
            "significant": abs(d) > 1.96 * se}  # fmt: skip


def run(
    settings: Settings,
    out: Path,
    fast: bool,
    reuse: str | None = None,
    labels_from: Path | None = None,
    audit_only: bool = False,
    heldout_file: Path | None = None,
    audit_samples: int | None = None,
) -> dict:
    """The whole experiment into ``out``. ``reuse``: a candidates.jsonl to label instead of
    sampling new pairs. ``labels_from``: an earlier run's directory whose judgments and reward
    models are used as they are (only PPO and the audit run again, e.g. with more PPO steps);
    with ``audit_only`` its PPO runs too (only the audit runs again, with ``audit_samples``
    replies per held-out prompt if given, else as many as the earlier run drew)."""
    from rlhfkit.raters.personas import load_pool
    from rlhfkit.raters.simulate import (
        LocalPlatform,
        create_project,
        export_preferences,
        simulate_pool,
    )
    from rlhfkit.train import reward

    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()

    if labels_from is not None:
        # the earlier run's held-out prompts (or --heldout-file's), whatever this command's
        # --pairs/--heldout say: other ones could be prompts its PPO runs trained on
        source = labels_from / "heldout-prompts.jsonl"
        if heldout_file is None and not source.exists():
            raise InputError(f"--labels-from {labels_from}: {source} not found")
        held = read_heldout(heldout_file or source, settings.heldout if heldout_file else None)
        write_prompts(held, out / "heldout-prompts.jsonl")
        return _rerun_policies(
            settings, out, fast, labels_from, held, timings, t0, audit_only, audit_samples
        )

    # 1. prompts: the first `pairs` for candidates and PPO, the next `heldout` for evaluation
    if heldout_file is None:
        prompts = load_prompts(settings.pairs + settings.heldout, fast)
        train_prompts, held = prompts[: settings.pairs], prompts[settings.pairs :]
    else:
        train_prompts = load_prompts(settings.pairs, fast)
        held = read_heldout(heldout_file, settings.heldout)
        seen = {json.dumps(p, sort_keys=True) for p in train_prompts}
        if any(json.dumps(p, sort_keys=True) in seen for p in held):
            raise InputError(f"--heldout-file {heldout_file}: it shares prompts with training")
    write_prompts(held, out / "heldout-prompts.jsonl")
    log(f"{len(train_prompts)} candidate prompts, {len(held)} held out")

    # 2. candidates: two replies per prompt, the same pairs for both pools
    if reuse is not None:
        rows = [json.loads(line) for line in Path(reuse).read_text("utf-8").splitlines() if line]
        items = [(r["prompt"], r["a"], r["b"]) for r in rows]
    else:
        items = candidates(settings, train_prompts, fast)
    (out / "candidates.jsonl").write_text(
        "".join(json.dumps({"prompt": p, "a": a, "b": b}) + "\n" for p, a, b in items), "utf-8"
    )
    timings["candidates_s"] = round(time.perf_counter() - t0, 1)
    log(f"{len(items)} candidate pairs ({timings['candidates_s']} s)")

    # 3. each pool labels the same pairs through the platform
    summaries = {}
    with LocalPlatform() as platform:
        for n, name in enumerate(POOLS):
            pool = load_pool(ROOT / "configs" / "pools" / f"{name}.yaml")
            pid = create_project(
                platform.base_url, platform.admin_token, name, items, overlap_k=settings.overlap_k
            )
            s = simulate_pool(
                pool, platform.base_url, pid, platform.admin_token, seed=settings.seed + n
            )
            exported = export_preferences(
                platform.base_url, platform.admin_token, pid, out / name / "preferences.jsonl"
            )
            summaries[name] = {k: v for k, v in s.items() if k != "raters"} | {
                "exported_pairs": exported
            }
            log(f"{name}: {s['judgments']} judgments at {s['judgments_per_s']}/s, {exported} pairs")
    timings["platform_s"] = round(time.perf_counter() - t0 - timings["candidates_s"], 1)

    # 4. a reward model and 5. a short PPO run per pool
    runs = []
    for name in POOLS:
        t = time.perf_counter()
        rm_dir = reward.train(
            reward.Config(
                model=settings.model,
                data=str(out / name / "preferences.jsonl"),
                out=out / name / "rm",
                epochs=settings.rm_epochs,
                max_length=settings.rm_max_length,
                batch_size=8,
                lr=settings.rm_lr,
                seed=settings.seed,
                save_every=0,
                log_every=10,
            )
        )
        timings[f"rm_{name}_s"] = round(time.perf_counter() - t, 1)
        log(f"{name}: reward model in {timings[f'rm_{name}_s']} s")
        runs.append(_ppo(settings, name, rm_dir / "model", out / name, out / name, timings))
    return _audit_and_result(settings, out, fast, len(items), summaries, runs, held, timings, t0)


def _ppo(settings: Settings, name: str, rm_model: Path, labels: Path, out: Path, timings) -> Path:
    from rlhfkit.train import ppo

    t = time.perf_counter()
    ppo_dir = ppo.train(
        ppo.Config(
            policy=settings.model,
            reward=str(rm_model),
            prompts=str(labels / "preferences.jsonl"),
            out=out / "ppo",
            max_steps=settings.ppo_steps,
            batch_size=settings.ppo_batch,
            max_new_tokens=settings.ppo_tokens,
            lr=settings.ppo_lr,
            missing_eos_penalty=settings.ppo_eos_penalty,
            seed=settings.seed,
            normalize_samples=min(32, 4 * settings.ppo_batch),
            log_every=1,
        )
    )
    timings[f"ppo_{name}_s"] = round(time.perf_counter() - t, 1)
    log(f"{name}: PPO in {timings[f'ppo_{name}_s']} s")
    return ppo_dir


def _rerun_policies(
    settings, out, fast, labels_from: Path, held, timings, t0, audit_only=False, audit_samples=None
) -> dict:
    """PPO and the audit again, from an earlier run's judgments and reward models (with
    ``audit_only``, the audit alone, of the earlier run's PPO runs)."""
    earlier_file = labels_from / "result.json"
    needed = ("preferences.jsonl", "rm/model") + (("ppo/model",) if audit_only else ())
    # An audit-only rerun may follow a run stopped after its PPO runs, before result.json
    first = (
        [earlier_file] if not audit_only or not (labels_from / "candidates.jsonl").exists() else []
    )
    missing = [
        p for p in first + [labels_from / n / f for n in POOLS for f in needed] if not p.exists()
    ]
    if missing:
        raise InputError(
            f"--labels-from {labels_from}: {missing[0]} not found (run it in full first)"
        )
    earlier = _earlier_result(labels_from, settings)
    if audit_only:
        # nothing is trained again: the earlier run's settings describe what is audited; how it
        # is audited (the held-out prompts, replies per prompt) is this command's
        audited = {**earlier["settings"], "heldout": len(held)}
        if audit_samples is not None:
            audited["samples"] = audit_samples
        runs = [labels_from / name / "ppo" for name in POOLS]
        return _audit_and_result(
            Settings(**audited), out, fast, earlier["pairs"], earlier["platform"],
            runs, held, timings, t0, labels_from=str(labels_from),
        )  # fmt: skip
    runs = [
        _ppo(
            settings,
            name,
            labels_from / name / "rm" / "model",
            labels_from / name,
            out / name,
            timings,
        )
        for name in POOLS
    ]
    return _audit_and_result(
        settings, out, fast, earlier["pairs"], earlier["platform"], runs, held, timings, t0,
        labels_from=str(labels_from),
    )  # fmt: skip


def _earlier_result(run_dir: Path, settings: Settings) -> dict:
    """An earlier run's result.json; for a run stopped before its audit wrote one, what its
    files say (pairs from candidates.jsonl, exported pairs per pool) and this invocation's
    settings, with the PPO settings read from the balanced pool's ``ppo/config.yaml``."""
    path = run_dir / "result.json"
    if path.exists():
        return json.loads(path.read_text("utf-8"))

    def lines(p: Path) -> int:
        return sum(1 for line in p.read_text("utf-8").splitlines() if line.strip())

    log(f"{path} not found: pairs and exports from the run's files, settings from this command")
    note = "the run stopped before its result.json: only the exported pairs are known"
    recorded = asdict(settings)
    config = run_dir / POOLS[0] / "ppo" / "config.yaml"
    if config.exists():
        ppo_cfg = yaml.safe_load(config.read_text("utf-8")) or {}
        for key, name in (("ppo_steps", "max_steps"), ("ppo_batch", "batch_size"),
                          ("ppo_tokens", "max_new_tokens"), ("ppo_lr", "lr"), ("seed", "seed"),
                          ("ppo_eos_penalty", "missing_eos_penalty")):  # fmt: skip
            if name in ppo_cfg:
                recorded[key] = ppo_cfg[name]
    return {
        "settings": recorded,
        "pairs": lines(run_dir / "candidates.jsonl"),
        "platform": {
            name: {"exported_pairs": lines(run_dir / name / "preferences.jsonl"), "note": note}
            for name in POOLS
        },
    }


def _audit_and_result(
    settings, out, fast, pairs, summaries, runs, held, timings, t0, labels_from=None
) -> dict:
    from rlhfkit.raters.propagation import DEFAULT_ATTRIBUTES, audit_propagation

    # 6. the propagation audit of both runs
    t = time.perf_counter()
    report = audit_propagation(
        [str(r) for r in runs],
        prompts=str(out / "heldout-prompts.jsonl"),
        # All probe attributes, so that length is not credited with what travels with it
        # (refusals are short, lists and courtesies add words).
        attributes=list(DEFAULT_ATTRIBUTES),
        n_prompts=len(held),
        samples=settings.samples,
        max_new_tokens=None,  # each run's own, from its config (what its PPO sampled)
        seed=settings.seed,
        out=out / "audit",
    )
    timings["audit_s"] = round(time.perf_counter() - t, 1)
    timings["total_s"] = round(time.perf_counter() - t0, 1)

    by_pool = dict(zip(POOLS, report["runs"], strict=True))
    stages = {
        stage: {name: by_pool[name]["stages"].get(stage, {}).get("length") for name in POOLS}
        for stage in ("raters", "reward_model", "policy")
    }
    for per_pool in stages.values():
        per_pool["contrast"] = contrast(per_pool["balanced"], per_pool["length-loving"])
    # the policies met the same held-out prompts and seeds: their difference measured directly
    paired = report.get("policy_contrasts") or [{}]
    stages["policy"]["contrast_paired"] = paired[0].get("attributes", {}).get("length")
    result = {
        "settings": asdict(settings),
        "fast": fast,
        "pairs": pairs,
        "labels_from": labels_from,
        "platform": summaries,
        "length": stages,
        "policy_words": {n: by_pool[n]["policy_details"].get("words") for n in POOLS},
        "timings": timings,
        "audit": str(out / "audit"),
        "plot": str(out / "audit" / "propagation-length.png"),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def summary_table(result: dict) -> str:
    def cell(e):
        if e is None or e.get("estimate") is None:
            return "null"
        star = " *" if e["significant"] else ""
        return f"{e['estimate']:+.3f} [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]{star}"

    lines = [f"{'length bias':14s} {'balanced':28s} {'length-loving':28s} {'contrast':28s}"]
    for stage, row in result["length"].items():
        cells = [cell(row[k]) for k in ("balanced", "length-loving", "contrast")]
        lines.append(f"{stage:14s} {cells[0]:28s} {cells[1]:28s} {cells[2]:28s}")
    if result["length"]["policy"].get("contrast_paired"):
        paired = cell(result["length"]["policy"]["contrast_paired"])
        lines.append(f"{'policy, paired':14s} {'':57s} {paired:28s}")
    for name, words in result["policy_words"].items():
        if words:
            lines.append(f"{name}: mean words {words['reference']:.1f} -> {words['policy']:.1f}")
    lines.append("* 95% interval excludes 0")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="tiny model, synthetic candidates")
    parser.add_argument("--model", default=None, help="default, tiny or a model directory")
    parser.add_argument("--out", default="runs/bias-propagation", help="output directory")
    for key, value in REAL.items():
        if key != "model":
            parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None)
    parser.add_argument(
        "--candidates", default=None, help="reuse a candidates.jsonl written by an earlier run"
    )
    parser.add_argument(
        "--labels-from",
        type=Path,
        default=None,
        help="an earlier run's directory: reuse its judgments and reward models, rerun PPO and"
        " the audit (e.g. with more --ppo-steps)",
    )
    parser.add_argument(
        "--heldout-file",
        type=Path,
        default=None,
        help="held-out prompts for the policy stage (the first --heldout of them; a prompts"
        " file or MT-Bench question.jsonl) instead of those after the candidates' prompts",
    )
    parser.add_argument(
        "--audit-only",
        action="store_true",
        help="with --labels-from: reuse its PPO runs too, and run only the audit again",
    )
    parser.add_argument(
        "--ppo-eos-penalty",
        type=float,
        default=None,
        help="PPO's score for a reply that never ends (default: none, the reward model's score)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 on a busy machine)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    values = dict(FAST if args.fast else REAL)
    values.update({k: v for k, v in vars(args).items() if k in values and v is not None})
    if args.model:
        values["model"] = args.model
    values["ppo_eos_penalty"] = args.ppo_eos_penalty
    if args.audit_only and args.labels_from is None:
        parser.error("--audit-only needs --labels-from DIR (the run whose PPO runs to audit)")
    result = run(
        Settings(**values),
        Path(args.out),
        args.fast,
        args.candidates,
        args.labels_from,
        audit_only=args.audit_only,
        heldout_file=args.heldout_file,
        audit_samples=args.samples,
    )
    print(json.dumps(result, indent=2) if args.json else summary_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
