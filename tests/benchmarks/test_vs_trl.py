"""benchmarks/vs_trl.py: its --help, its arithmetic, bad input, and our side of one task on the
tiny model. TRL is never installed here: the runs below point --trl-venv at an absent directory
with --no-install, which is also how the script must behave on a machine without TRL."""

from __future__ import annotations

import gzip
import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, shared_file

SCRIPT = ROOT / "benchmarks" / "vs_trl.py"


def _module():
    spec = importlib.util.spec_from_file_location("vs_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_help_lists_the_flags():
    done = _run("--help", timeout=120)
    assert done.returncode == 0, done.stderr
    for flag in ("--model", "--tasks", "--steps", "--batch-size", "--max-length", "--json"):
        assert flag in done.stdout
    assert "--fast" in done.stdout


def test_rates_exclude_the_warmup_and_charge_the_dpo_reference_pass():
    vs_trl = _module()
    marks = [
        {"t": 10.0, "units": 8, "tokens": 1000},  # end of the warm-up step: the clock starts
        {"t": 14.0, "units": 16, "tokens": 2500},
        {"t": 20.0, "units": 24, "tokens": 3500},
    ]
    out = vs_trl.summarize("reward", {"marks": marks}, warmup=1, steps=2, n_params=100, peak=1e6)
    assert out["seconds"] == 10.0
    assert out["step_s"] == [4.0, 6.0]
    assert out["rate"] == pytest.approx(16 / 10)  # 16 pairs in 10 s
    assert out["tokens"] == 2500
    assert out["flops_per_s"] == pytest.approx(6 * 100 * 2500 / 10)
    assert out["peak_share"] == pytest.approx(6 * 100 * 2500 / 10 / 1e6, abs=1e-4)

    # DPO: a 12 s reference pass over 24 pairs costs 0.5 s per pair; 16 timed pairs pay 8 s
    result = {"marks": marks, "reference": {"seconds": 12.0, "pairs": 24}}
    out = vs_trl.summarize("dpo", result, warmup=1, steps=2, n_params=100, peak=1e6)
    assert out["reference_s_charged"] == 8.0
    assert out["rate"] == pytest.approx(16 / 18)
    assert out["flops_per_s"] == pytest.approx(8 * 100 * 2500 / 18)


def test_a_run_that_stopped_early_is_an_error_not_a_rate():
    vs_trl = _module()
    marks = [{"t": 1.0, "units": 1, "tokens": 1}]
    out = vs_trl.summarize("sft", {"marks": marks}, warmup=1, steps=2, n_params=1, peak=1.0)
    assert "error" in out and "rate" not in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--tasks", "reward,nope"], "unknown nope"),
        (["--warmup", "0"], "at least 1"),
        (["--batch-size", "6", "--group-size", "4"], "not a multiple"),
    ],
)
def test_bad_flags_exit_2_with_a_message(args, expected):
    done = _run("--fast", "--skip-trl", *args, timeout=120)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_garbage_data_exits_2_naming_the_file(tmp_path):
    garbage = tmp_path / "pairs.jsonl.gz"
    with gzip.open(garbage, "wt") as fh:
        fh.write('{"chosen": "Human: hi"\nnot json at all\n')
    done = _run("--fast", "--skip-trl", "--tasks", "sft", "--data", str(garbage), timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert str(garbage) in done.stderr
    assert "Traceback" not in done.stderr
    missing = tmp_path / "absent.jsonl.gz"
    done = _run("--fast", "--skip-trl", "--tasks", "sft", "--data", str(missing), timeout=300)
    assert done.returncode == 2
    assert "no such file" in done.stderr


def test_our_side_runs_in_fast_mode_without_trl(tmp_path):
    data = shared_file("hh-rlhf/harmless-base-dev.jsonl.gz")
    absent = tmp_path / "no-trl-venv"
    done = _run(
        "--fast", "--tasks", "sft", "--steps", "1", "--data", str(data), "--json",
        "--no-install", "--trl-venv", str(absent), "--peak-seconds", "0.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert not absent.exists(), "TRL's venv must not be created with --no-install"
    report = json.loads(done.stdout)
    sft = report["tasks"]["sft"]
    assert "trl" not in sft and "TRL not run" in sft["notes"]
    ours = sft["rlhfkit"]
    assert ours["rate"] > 0 and ours["units"] == ours["tokens"] > 0  # SFT counts tokens
    # one timed step of 4 demonstrations of at most 128 tokens
    assert ours["tokens"] <= 4 * 128
    assert len(ours["step_s"]) == 1
    assert 0 < ours["peak_share"] < 1
    assert report["machine"]["matmul_peak_gflops"] > 0
    assert report["settings"]["model"] == "tiny-dir"
