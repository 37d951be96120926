"""Speed against TRL: rlhfkit's trainers and TRL's, side by side in one run, on the same model,
the same data, the same max length, batch and number of steps.

| task   | measured  | rlhfkit                    | TRL                              | target     |
|--------|-----------|----------------------------|----------------------------------|------------|
| reward | pairs/s   | ``rlhfkit.train.reward``   | ``RewardTrainer``                | >= 1.5 x   |
| sft    | tokens/s  | ``rlhfkit.train.sft``      | ``SFTTrainer``                   | >= 1 x     |
| ppo    | samples/s | ``rlhfkit.train.ppo``      | ``RLOOTrainer`` (no PPO in TRL)  | >= 2 x     |
| dpo    | pairs/s   | ``rlhfkit.train.dpo``      | ``DPOTrainer``                   | >= 1.5 x   |
| rloo   | samples/s | ``rlhfkit.train.rloo``     | ``RLOOTrainer`` (same group)     | >= 3 x     |

TRL lives in its own virtualenv (``benchmarks/.venv-trl``, created on first use with the pinned
versions below, torch first so that pip never pulls a CUDA build). Each side of each task runs
in its own process (``_ours_side.py`` with this interpreter, ``_trl_side.py`` with TRL's) with
the same thread count, in fp32. TRL runs with its gradient checkpointing off (its configs turn it
on by default; our side never recomputes activations, so off is the same work on both sides;
``--trl-gradient-checkpointing`` keeps TRL's default). Each side records the time at the end of
every optimizer step and running counts of the work done; the first ``--warmup`` steps are
excluded and the rate is the work of the next ``--steps`` steps over their wall-clock time.
Tokens are non-padding tokens.

Achieved FLOP/s is reported as a share of the machine's fp32 matmul peak, measured here with a
loop of large ``torch.matmul`` calls. Model FLOPs use N = parameters without the input
embedding: 6 N per token trained (forward + backward), 2 N per token forward-only or generated.
Per task: reward and SFT 6 N x tokens; DPO 8 N x tokens (policy trained + reference forward);
PPO and RLOO 12 N x (prompt + response tokens of the samples): generation, reward model and
reference forward passes and one policy update. PPO's value model and its second epoch are not
counted, so PPO's share understates what it computes.

Usage::

    .venv/bin/python benchmarks/vs_trl.py                      # the comparison, ~25 min
    .venv/bin/python benchmarks/vs_trl.py --fast               # smoke run on the tiny model
    .venv/bin/python benchmarks/vs_trl.py --tasks reward,sft --steps 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlhfkit.errors import InputError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HH_PAIRS = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-dev.jsonl.gz"
TRL_VENV = HERE / ".venv-trl"
TORCH_PIN = "torch==2.13.0"
# the TRL release that supports transformers 5.23 (it asks for >= 4.56.2), with the same
# transformers and accelerate as rlhfkit's venv so that both sides run the same library code
TRL_PINS = ("trl==1.16.0", "transformers==5.23.0", "accelerate==1.15.0", "datasets==5.2.0")

TASKS = ("reward", "sft", "ppo", "dpo", "rloo")
UNIT = {"reward": "pairs/s", "sft": "tokens/s", "ppo": "samples/s", "dpo": "pairs/s"}
UNIT["rloo"] = "samples/s"
TARGET = {"reward": 1.5, "sft": 1.0, "ppo": 2.0, "dpo": 1.5, "rloo": 3.0}
FLOPS_PER_TOKEN = {"reward": 6, "sft": 6, "dpo": 8, "ppo": 12, "rloo": 12}  # x N, see above
TRL_TASK = {"reward": "reward", "sft": "sft", "dpo": "dpo", "ppo": "rloo", "rloo": "rloo"}
TRL_NAME = {"reward": "RewardTrainer", "sft": "SFTTrainer", "dpo": "DPOTrainer"}
TRL_NAME.update(ppo="RLOOTrainer", rloo="RLOOTrainer")

DEFAULTS = dict(
    model="default",
    steps=3,
    warmup=1,
    batch_size=8,
    max_length=256,
    max_new_tokens=64,
    group_size=4,
)
FAST = dict(
    model="tiny-dir",
    steps=2,
    warmup=1,
    batch_size=4,
    max_length=128,
    max_new_tokens=16,
    group_size=2,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time rlhfkit's trainers against TRL's on the same model, data and settings.",
    )
    p.add_argument(
        "--model",
        default=None,
        help="default (SmolLM2-135M-Instruct), tiny-dir (the tiny test model saved "
        "to a temporary directory) or a transformers model directory "
        f"[default: {DEFAULTS['model']}; {FAST['model']} with --fast]",
    )
    p.add_argument(
        "--tasks",
        default=",".join(TASKS),
        help="comma-separated subset of " + ",".join(TASKS) + " [all]",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"timed optimizer steps per run [{DEFAULTS['steps']}]",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"untimed steps first, at least 1 [{DEFAULTS['warmup']}]",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"pairs, demonstrations or samples per optimizer step [{DEFAULTS['batch_size']}]",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="longest sequence in tokens (prompts of the RL tasks fit in it) "
        f"[{DEFAULTS['max_length']}]",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help=f"generation length of the RL tasks [{DEFAULTS['max_new_tokens']}]",
    )
    p.add_argument(
        "--group-size",
        type=int,
        default=None,
        help=f"samples per prompt for RLOO (both sides) [{DEFAULTS['group_size']}]",
    )
    p.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch threads, each side [all cores]"
    )
    p.add_argument("--seed", type=int, default=0, help="seed, both sides [0]")
    p.add_argument(
        "--data",
        type=Path,
        default=HH_PAIRS,
        help="HH-RLHF pairs (.jsonl.gz) [../shared/data/hh-rlhf/harmless-base-dev]",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="smoke mode: tiny model, short sequences, few steps (flags given win)",
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument(
        "--trl-gradient-checkpointing",
        action="store_true",
        help="keep TRL's default gradient checkpointing (recomputes activations: ~20%% more "
        "work than our side does) [off]",
    )
    p.add_argument("--skip-trl", action="store_true", help="run only rlhfkit's side")
    p.add_argument(
        "--no-install",
        action="store_true",
        help="never create TRL's venv; skip TRL's side when it is absent",
    )
    p.add_argument(
        "--trl-venv", type=Path, default=TRL_VENV, help="TRL's virtualenv [benchmarks/.venv-trl]"
    )
    p.add_argument(
        "--python", default="python3.11", help="interpreter that creates TRL's venv [python3.11]"
    )
    p.add_argument(
        "--timeout", type=int, default=3600, help="seconds allowed to one side of one task [3600]"
    )
    p.add_argument(
        "--peak-seconds",
        type=float,
        default=6.0,
        help="seconds spent measuring the matmul peak [6]",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, data, models)"
    )
    args = p.parse_args(argv)
    preset = FAST if args.fast else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown or not args.tasks:
        p.error(
            f"--tasks: unknown {', '.join(unknown) or '(none given)'}; expected {','.join(TASKS)}"
        )
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be at least 1 (the first step is never timed)")
    if args.batch_size % args.group_size:
        p.error(
            f"--batch-size {args.batch_size} is not a multiple of --group-size {args.group_size}"
        )
    return args


def say(*parts) -> None:
    print("[vs_trl]", *parts, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ TRL's venv


def trl_python(args) -> Path | None:
    """TRL's interpreter, creating the venv with the pinned versions when needed."""
    venv = args.trl_venv
    python = venv / "bin" / "python"
    stamp = venv / ".pins"
    wanted = "\n".join([TORCH_PIN, *TRL_PINS])
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if args.no_install:
        return None
    say(f"installing {', '.join(TRL_PINS)} into {venv} (once)")
    if not python.exists():
        subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    # torch alone first: the CPU build on this machine's disk, before anything can pull CUDA
    subprocess.run([*pip, TORCH_PIN], check=True)
    subprocess.run([*pip, TORCH_PIN, *TRL_PINS], check=True)
    stamp.write_text(wanted)
    return python


# ---------------------------------------------------------------------------------- data, models


def prepare_data(args, work: Path, tokenizer) -> dict[str, str]:
    """HH pairs converted by ``rlhfkit data convert``, then written as the files both sides read:
    pairs (prompt/chosen/rejected), demonstrations (prompt/completion = chosen), DPO pairs (the
    first batch x steps pairs: our side computes reference log-probs for its whole file), and
    prompts that fit the max length with the generated reply (so neither side truncates)."""
    from rlhfkit.models.chat import encode_prompt

    if not args.data.exists():
        raise InputError(f"--data {args.data}: no such file (HH-RLHF pairs expected)")
    converted = work / "hh-trl.jsonl"
    rlhfkit = Path(sys.executable).parent / "rlhfkit"
    command = [str(rlhfkit)] if rlhfkit.exists() else [sys.executable, "-m", "rlhfkit.cli"]
    done = subprocess.run(
        [*command, "data", "convert", str(args.data), "--out", str(converted)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        # the converter's message names the file and line; pass it on as it is
        lines = done.stderr.strip().splitlines() or ["rlhfkit data convert failed"]
        raise InputError(f"--data: {lines[-1].removeprefix('rlhfkit: ')}")
    records = [json.loads(line) for line in converted.read_text(encoding="utf-8").splitlines()]
    pairs = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records if not r["tie"]]
    room = args.max_length - args.max_new_tokens
    fitting, seen = [], set()
    for pair in pairs:
        key = json.dumps(pair["prompt"])
        if key not in seen and len(encode_prompt(tokenizer, pair["prompt"])) <= room:
            seen.add(key)
            fitting.append(pair)
    n_dpo = args.batch_size * (args.warmup + args.steps)
    files = {
        "pairs": pairs,
        "demos": [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs],
        "dpo_pairs": pairs[:n_dpo],
        "prompts": fitting,
    }
    if len(pairs) < n_dpo or len(fitting) < args.batch_size:
        raise InputError(
            f"--data {args.data}: {len(pairs)} pairs and {len(fitting)} prompts of at most "
            f"{room} tokens; a run needs {n_dpo} pairs and {args.batch_size} prompts"
        )
    out = {}
    for name, rows in files.items():
        path = work / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        out[name] = str(path)
    say(f"data: {len(pairs)} pairs, {len(fitting)} prompts of at most {room} tokens")
    return out


def prepare_models(args, work: Path, need_reward_model: bool):
    """(model dir, reward model dir or None, N non-embedding parameters, tokenizer)."""
    from rlhfkit.models import default_model_dir, load_policy, tiny_policy
    from rlhfkit.models.heads import load_reward_model

    if args.model == "default":
        model_dir = default_model_dir()
    elif args.model == "tiny-dir":
        model_dir = work / "tiny-model"
        tiny = tiny_policy(seed=args.seed)
        tiny.model.save_pretrained(model_dir)
        tiny.tokenizer.save_pretrained(model_dir)
    else:
        model_dir = Path(args.model)
    policy = load_policy(model_dir)
    model = policy.model
    n_params = (
        sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    )
    reward_dir = None
    if need_reward_model:
        # a fresh scalar head on the same body: an untrained reward model costs what a trained
        # one costs, and both sides load this same directory
        reward_dir = work / "reward-model"
        rm = load_reward_model(model_dir, seed=args.seed)
        rm.model.save_pretrained(reward_dir)
        rm.tokenizer.save_pretrained(reward_dir)
    return model_dir, reward_dir, n_params, policy.tokenizer


def matmul_peak(threads: int, seconds: float, n: int = 2048) -> float:
    """Best fp32 FLOP/s of back-to-back n x n matmuls over a few windows."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start, calls = time.perf_counter(), 0
        while calls < 4 or time.perf_counter() - start < 0.5:
            torch.matmul(a, b)
            calls += 1
        best = max(best, 2 * n**3 * calls / (time.perf_counter() - start))
    torch.set_num_threads(before)
    return best


# --------------------------------------------------------------------------------------- running


def run_side(side: str, python: Path, task: str, spec: dict, work: Path, timeout: int) -> dict:
    """Run one side of one task in its own process; its result, or {"error": ...}."""
    script = HERE / ("_ours_side.py" if side == "ours" else "_trl_side.py")
    spec = dict(spec, task=task, result=str(work / f"result-{side}-{task}.json"))
    spec_path = work / f"spec-{side}-{task}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    log = work / f"log-{side}-{task}.txt"
    threads = str(spec["threads"])
    env = dict(
        os.environ,
        OMP_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        HF_DATASETS_CACHE=str(work / "hf-datasets"),
        RLHFKIT_DATABASE_URL=f"sqlite:///{work / 'unused.db'}",
    )
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    say(f"{task}: {side} ...")
    try:
        with open(log, "w", encoding="utf-8") as fh:
            proc = subprocess.run(
                [str(python), str(script), str(spec_path)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=work,
                timeout=timeout,
            )
        failed = proc.returncode != 0
    except subprocess.TimeoutExpired:
        failed = True
    wall = round(time.perf_counter() - started, 1)
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if failed or not Path(spec["result"]).exists():
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        say(f"{task}: {side} FAILED after {wall} s; log {log}:\n" + "\n".join(tail))
        return {"error": tail[-1] if tail else "no output", "wall_s": wall, "load_avg_1m": load}
    result = json.loads(Path(spec["result"]).read_text(encoding="utf-8"))
    result.update(wall_s=wall, load_avg_1m=load)
    return result


def summarize(task: str, result: dict, warmup: int, steps: int, n_params: int, peak: float) -> dict:
    """Rates over the timed steps (marks[warmup-1] to marks[warmup+steps-1])."""
    if "error" in result:
        return result
    marks = result["marks"]
    if len(marks) < warmup + steps:
        return {"error": f"only {len(marks)} steps recorded", "wall_s": result.get("wall_s")}
    first, last = marks[warmup - 1], marks[warmup + steps - 1]
    seconds = last["t"] - first["t"]
    units = last["units"] - first["units"]
    tokens = last["tokens"] - first["tokens"]
    window = [m["t"] for m in marks[warmup - 1 : warmup + steps]]
    step_s = [round(b - a, 3) for a, b in zip(window, window[1:], strict=False)]
    out = {"seconds": round(seconds, 3), "step_s": step_s}
    ref = result.get("reference")
    if ref and ref["pairs"]:
        # our DPO scores the reference once before training: charge each timed pair its share
        charged = ref["seconds"] * units / ref["pairs"]
        seconds += charged
        out["reference_s_charged"] = round(charged, 3)
    flops = FLOPS_PER_TOKEN[task] * n_params * tokens
    lengths = result.get("response_lengths") or []
    timed_lengths = lengths[warmup : warmup + steps]
    out.update(
        rate=units / seconds,
        units=units,
        tokens=tokens,
        tokens_per_s=round(tokens / seconds, 2),
        flops_per_s=flops / seconds,
        peak_share=round(flops / seconds / peak, 4),
        wall_s=result.get("wall_s"),
        load_avg_1m=result.get("load_avg_1m"),
        versions=result.get("versions"),
        threads=result.get("threads"),
    )
    if timed_lengths:
        out["mean_response_tokens"] = round(sum(timed_lengths) / len(timed_lengths), 1)
    return out


def table(report: dict) -> str:
    head = ("task", "measured", "rlhfkit", "TRL", "ratio", "target", "rlhfkit %peak", "TRL %peak")
    rows = [head]
    for task, entry in report["tasks"].items():
        ours, trl = entry["rlhfkit"], entry.get("trl") or {}

        def rate(side):
            if "error" in side:
                return "failed"
            return f"{side['rate']:.3g}" if "rate" in side else "-"

        def share(side):
            return f"{100 * side['peak_share']:.1f}%" if "peak_share" in side else "-"

        ratio = f"{entry['ratio']:.2f}x" if entry.get("ratio") else "-"
        verdict = {True: " ok", False: " BELOW", None: ""}[entry.get("meets_target")]
        rows.append(
            (
                task,
                UNIT[task],
                rate(ours),
                rate(trl),
                ratio,
                f">={TARGET[task]:g}x{verdict}",
                share(ours),
                share(trl),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    machine = report["machine"]
    lines.append(
        f"fp32 matmul peak {machine['matmul_peak_gflops']:.1f} GFLOP/s on {machine['threads']} "
        f"threads; load average (1 min) {machine['load_avg_start'][0]} at start, "
        f"{machine['load_avg_end'][0]} at end; N = {report['settings']['n_params']:,} parameters "
        "without the input embedding"
    )
    for task, entry in report["tasks"].items():
        for note in entry.get("notes", []):
            lines.append(f"{task}: {note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except InputError as exc:
        print(f"vs_trl: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """Prepare, run every task on both sides, report; 1 when one of our runs failed."""
    work = Path(tempfile.mkdtemp(prefix="vs-trl-"))
    started = time.time()
    load_start = [round(x, 2) for x in os.getloadavg()]
    try:
        python_trl = None if args.skip_trl else trl_python(args)
        if python_trl is None and not args.skip_trl:
            say(f"TRL's venv {args.trl_venv} is absent and --no-install was given: rlhfkit only")
        need_rm = any(t in ("ppo", "rloo") for t in args.tasks)
        model_dir, reward_dir, n_params, tokenizer = prepare_models(args, work, need_rm)
        data = prepare_data(args, work, tokenizer)
        peak = matmul_peak(args.threads, args.peak_seconds)
        say(f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s on {args.threads} threads")
        spec = dict(
            model=str(model_dir),
            reward_model=str(reward_dir) if reward_dir else None,
            **data,
            work=str(work),
            warmup=args.warmup,
            steps=args.steps,
            batch_size=args.batch_size,
            max_length=args.max_length,
            max_new_tokens=args.max_new_tokens,
            max_prompt_length=args.max_length - args.max_new_tokens,
            group_size=args.group_size,
            temperature=0.7,
            trl_gradient_checkpointing=args.trl_gradient_checkpointing,
            kl_coef=0.05,
            threads=args.threads,
            seed=args.seed,
        )
        trl_runs: dict[str, dict] = {}  # PPO and RLOO share one RLOOTrainer run
        tasks = {}
        for task in args.tasks:
            ours = run_side("ours", Path(sys.executable), task, spec, work, args.timeout)
            ours = summarize(task, ours, args.warmup, args.steps, n_params, peak)
            entry = {"rlhfkit": ours, "trl_trainer": TRL_NAME[task], "notes": []}
            if python_trl is not None:
                name = TRL_TASK[task]
                if name not in trl_runs:
                    raw = run_side("trl", python_trl, name, spec, work, args.timeout)
                    trl_runs[name] = summarize(task, raw, args.warmup, args.steps, n_params, peak)
                entry["trl"] = trl_runs[name]
                if "rate" in ours and "rate" in entry["trl"]:
                    entry["ratio"] = round(ours["rate"] / entry["trl"]["rate"], 3)
                    entry["meets_target"] = entry["ratio"] >= TARGET[task]
            else:
                entry["notes"].append("TRL not run")
            if "error" in ours and task in ("dpo", "rloo"):
                entry["notes"].append(f"rlhfkit's {task} failed or is absent: {ours['error']}")
            tasks[task] = entry
            say(
                f"{task}: rlhfkit {ours.get('rate', 'failed')} vs TRL "
                f"{(entry.get('trl') or {}).get('rate', '-')} {UNIT[task]}"
            )
        report = {
            "machine": {
                "threads": args.threads,
                "cpus": os.cpu_count(),
                "matmul_peak_gflops": round(peak / 1e9, 2),
                "load_avg_start": load_start,
                "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            },
            "settings": {
                "model": args.model,
                "model_dir": str(model_dir),
                "n_params": n_params,
                "steps": args.steps,
                "warmup": args.warmup,
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "max_new_tokens": args.max_new_tokens,
                "group_size": args.group_size,
                "trl_gradient_checkpointing": args.trl_gradient_checkpointing,
                "seed": args.seed,
                "flops_per_token_x_n": FLOPS_PER_TOKEN,
            },
            "tasks": tasks,
            "wall_s": round(time.time() - started, 1),
        }
        if args.json:
            print(json.dumps(report, indent=2, default=str))
        else:
            print(table(report))
        failed = any("error" in e["rlhfkit"] for e in tasks.values())
        return 1 if failed else 0
    finally:
        if args.keep:
            say(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
