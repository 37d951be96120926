"""The benchmark scripts run end to end in their smoke modes and refuse bad input clearly."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_reward_benchmark_fast_mode_writes_heldout_accuracy(tmp_path, shared_data, capsys):
    data = shared_data("hh-rlhf/harmless-base-dev.jsonl.gz")
    assert load("reward_hh").main(["--fast", "--data", str(data), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["heldout"]["n"] == 300
    assert 0 <= result["heldout"]["accuracy"] <= 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result


def test_ppo_benchmark_fast_mode_splits_prompts_like_the_reward_benchmark(tmp_path, shared_data):
    data = shared_data("hh-rlhf/harmless-base-dev.jsonl.gz")
    out = tmp_path / "ppo"
    assert load("ppo_hh").main(["--fast", "--data", str(data), "--out", str(out)]) == 0
    result = json.loads((out / "bench.json").read_text())
    assert result["steps"] == 3
    assert result["heldout_before"]["n"] == result["heldout_after"]["n"] == 8
    pair = result["heldout_paired"]  # reply by reply, the same 8 prompts before and after
    diffs = [
        a - b
        for a, b in zip(
            result["heldout_after"]["scores"], result["heldout_before"]["scores"], strict=True
        )
    ]
    assert pair["n"] == 8 and pair["better"] + pair["worse"] <= 8
    assert pair["mean_diff"] == pytest.approx(sum(diffs) / 8, abs=1e-3)
    assert pair["better"] == sum(d > 0 for d in diffs)
    # scored as if every reply had ended: the same as generated where it did end
    before = result["heldout_before"]
    for score, ended, has_eos in zip(
        before["scores"], before["scores_if_ended"], before["has_eos"], strict=True
    ):
        if has_eos:
            assert ended == score
    assert result["heldout_paired_if_ended"]["n"] == 8
    assert (out / "curves.png").stat().st_size > 1000
    from rlhfkit.data import read_preferences
    from rlhfkit.train.base import read_prompts

    # the training side is reward_hh.py's 1,500 pairs, and no held-out prompt is trained on
    train = {repr(p) for p in read_prompts(str(out / "prompts-train.jsonl"))}
    held = {repr(p) for p in read_prompts(str(out / "prompts-heldout.jsonl"))}
    assert len(read_preferences(str(out / "prompts-train.jsonl"))) == 1500
    assert len(held) == 8 and not held & train


@pytest.mark.parametrize("name, relative", [("hh", "hh-rlhf/harmless-base-dev.jsonl.gz")])
def test_dpo_benchmark_fast_mode_draws_curves_and_heldout_accuracy(
    tmp_path, shared_data, name, relative
):
    shared_data(relative)
    out = tmp_path / "dpo"
    assert load("dpo_real").main(["--fast", "--data", name, "--out", str(out)]) == 0
    result = json.loads((out / "bench.json").read_text())
    assert 0 <= result["heldout"]["accuracy"] <= 1
    assert [e["step"] for e in result["heldout_curve"]] == [2, 3]
    assert (out / "curves.png").stat().st_size > 1000


def test_benchmarks_name_what_is_missing(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl.gz"
    assert load("reward_hh").main(["--data", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert load("ppo_hh").main(["--data", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert load("dpo_real").main(["--data", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_attention_backend_benchmark_needs_cuda(capsys):
    assert load("sdpa_backends").main([]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_personalities_benchmark_fast_mode_compares_both_with_the_start(tmp_path, shared_data):
    shared_data("oasst/en_100_message.jsonl")
    out = tmp_path / "pers"
    assert load("personalities").main(["--fast", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    report = result["comparison"]
    assert [r["label"] for r in report["runs"]] == ["tiny", "concise", "warm-and-polite"]
    assert [d["minus"] for d in report["differences"]] == ["tiny", "tiny", "concise"]
    assert [(d["run"], d["minus"]) for d in result["contrast"]] == [("warm-and-polite", "concise")]
    assert report["n_prompts"] == 4 and report["excluded_training_prompts"] == 8
    assert set(result["final_kl"]) == {"concise", "warm-and-polite"}


def test_personalities_benchmark_dpo_reports_what_the_ranking_taught(tmp_path, shared_data):
    shared_data("oasst/en_100_message.jsonl")
    out = tmp_path / "pers-dpo"
    argv = ["--fast", "--method", "dpo", "--samples", "4", "--rpo-alpha", "1", "--out", str(out)]
    argv += ["--eval-temperature", "1", "--eval-replies", "2"]
    assert load("personalities").main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "dpo" and result["samples"] == 4 and result["rpo_alpha"] == 1.0
    comparison = result["comparison"]
    assert comparison["temperature"] == 1.0 and comparison["replies_per_prompt"] == 2
    replies = (out / "replies.jsonl").read_text().splitlines()
    assert len(replies) == 3 * comparison["n_prompts"] * 2  # runs x prompts x draws

    # the trained personalities compared again on MT-Bench, nothing trained, result.json kept
    before = (out / "result.json").read_bytes()
    mt_bench = shared_data("mt-bench/question.jsonl")
    argv = ["--fast", "--method", "dpo", "--out", str(out), "--compare-only"]
    argv += ["--eval-prompts", str(mt_bench), "--eval-n", "3", "--eval-temperature", "1"]
    assert load("personalities").main([*argv, "--eval-replies", "2"]) == 0
    assert (out / "result.json").read_bytes() == before
    again = json.loads((out / "compare-question-t1x2.json").read_text())
    assert again["compare_only"] and again["comparison"]["n_prompts"] == 3
    assert again["comparison"]["prompts"] == str(mt_bench)
    assert set(again["pair_gaps"]) == {"concise", "warm-and-polite"}
    assert len((out / "replies-question-t1x2.jsonl").read_text().splitlines()) == 3 * 3 * 2
    first = json.loads((out / "concise" / "metrics.jsonl").read_text().splitlines()[0])
    # the likelihood term reached the trainer: step 1 is log 2 plus the chosen replies' NLL
    expected = math.log(2) + first["train/nll_chosen"]
    assert first["train/loss"] == pytest.approx(expected, abs=1e-5)
    gaps = result["pair_gaps"]
    assert set(gaps) == {"concise", "warm-and-polite"}
    for spec in gaps:
        pairs = [json.loads(x) for x in (out / spec / "pairs.jsonl").read_text().splitlines()]
        assert gaps[spec]["pairs"] == len(pairs) > 0
    # the tiny model's token salad never hedges or formats: concise ranks by concision alone
    assert gaps["concise"]["concision"] > 0
    assert gaps["concise"]["length"] == pytest.approx(-gaps["concise"]["concision"], abs=2e-4)


def test_personalities_benchmark_refuses_a_bad_evaluation_before_training(tmp_path):
    from rlhfkit.errors import InputError

    with pytest.raises(InputError, match="compare-only: .*concise/model not found"):
        load("personalities").main(["--fast", "--compare-only", "--out", str(tmp_path / "x")])
    with pytest.raises(InputError, match="--eval-prompts .*nope.jsonl: no such file"):
        load("personalities").main(["--fast", "--eval-prompts", str(tmp_path / "nope.jsonl")])

    out = tmp_path / "pers"
    argv = ["--fast", "--eval-replies", "2", "--out", str(out)]  # greedy: 2 replies are one
    with pytest.raises(InputError, match="greedy replies to a prompt are all the same"):
        load("personalities").main(argv)
    assert not out.exists()


def test_personalities_benchmark_names_a_missing_data_dir(tmp_path):
    from rlhfkit.errors import InputError

    with pytest.raises(InputError, match="en_100_message.jsonl: not found"):
        load("personalities").main(["--fast", "--data-dir", str(tmp_path), "--out", str(tmp_path)])


def test_personalities_benchmark_says_how_many_prompts_there_are(tmp_path, shared_data):
    from rlhfkit.errors import InputError

    shared_data("oasst/en_100_message.jsonl")
    argv = ["--train-prompts", "190", "--heldout-prompts", "10", "--out", str(tmp_path)]
    with pytest.raises(InputError, match=r"99 distinct single-turn prompts, 200 needed \(190 to"):
        load("personalities").main(argv)


def test_decode_floor_fast_mode_times_all_three(capsys):
    load("decode_floor").main(["--fast", "--json", "--threads", "0"])
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "tiny" and result["new_tokens"] == 4
    for key in ("generate_s", "plain_loop_s", "bare_linear_s"):
        assert result[key] > 0
    assert result["linear_weight_mb"] > 0


def test_store_ops_counts_statements_and_time(capsys):
    store_ops = load("store_ops")
    store_ops.main(["--raters", "3", "--rounds", "4", "--items", "20", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["calls"] == 12
    assert result["cpu_ms_per_call"] > 0
    assert 5 <= result["statements_per_call"] <= 20


def test_api_ops_times_the_hot_request_through_the_app(capsys):
    api_ops = load("api_ops")
    api_ops.main(["--raters", "3", "--rounds", "4", "--repeat", "2", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["calls_per_run"] == 12
    assert len(result["cpu_ms_per_call"]) == 2
    assert 0 < result["cpu_ms_per_call_median"] < 1000


@pytest.mark.parametrize("flag", ["--raters", "--rounds", "--repeat"])
def test_api_ops_refuses_zero(flag, capsys):
    with pytest.raises(SystemExit):
        load("api_ops").main([flag, "0"])
    assert f"{flag}: must be at least 1" in capsys.readouterr().err


def test_store_ops_refuses_zero_raters():
    with pytest.raises(SystemExit):
        load("store_ops").main(["--raters", "0"])
