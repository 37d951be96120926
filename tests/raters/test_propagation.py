"""The propagation audit: probe set, the estimators of each stage, run lineage, the CLI, and the
bias-propagation benchmark's smoke mode end to end (tiny models, a live platform server)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rlhfkit.cli import main
from rlhfkit.errors import InputError
from rlhfkit.raters.bias import log_words
from rlhfkit.raters.personas import attribute_values, load_pool
from rlhfkit.raters.propagation import (
    build_probes,
    format_propagation,
    policy_contrasts,
    policy_shift,
    probe_regression,
    rater_stage,
    trace_run,
)
from rlhfkit.raters.simulate import simulate_judgments, synthetic_items

ROOT = Path(__file__).resolve().parents[2]


def test_probes_are_deterministic_and_differ_in_their_attribute():
    probes = build_probes()
    assert [(p.variant, p.base) for p in probes] == [(p.variant, p.base) for p in build_probes()]
    kinds = {p.kind for p in probes}
    assert kinds == {"length", "politeness", "hedging", "refusal", "formatting"}
    names = ["length", "politeness", "hedging", "refusal", "formatting"]
    for kind in kinds:
        own = [p for p in probes if p.kind == kind]
        v = attribute_values(names, [p.variant for p in own])
        b = attribute_values(names, [p.base for p in own])
        # The probed attribute moves on every pair, in the variant's direction.
        assert (v[kind] > b[kind]).all(), kind
        if kind in ("politeness", "hedging"):
            assert np.allclose(v["length"], b["length"]), kind  # same number of words
        if kind == "formatting":  # the same words, plus one bullet marker per sentence
            assert all([w for w in p.variant.split() if w != "-"] == p.base.split() for p in own)
        if kind == "length":
            # Padding adds no hedges, courtesies or refusals (density scorers may dilute).
            for other in ("politeness", "hedging", "refusal"):
                assert (v[other] <= b[other] + 0.01).all(), other


def test_bad_probe_files(tmp_path):
    cases = {
        "x: [": "not valid YAML",
        "- a\n": "expected a mapping",
        "items: []\n": "items: expected a non-empty list",
        "items: [{prompt: p}]\npadding: [a]\npoliteness: [[a, b]]\nhedging: [[a, b]]\n"
        "refusals: [no]\n": "items[0]: expected prompt and answer",
        "items: [{prompt: p, answer: a}]\npadding: [a]\npoliteness: [a]\nhedging: [[a, b]]\n"
        "refusals: [no]\n": "politeness[0]",
    }
    for text, message in cases.items():
        path = tmp_path / "probes.yaml"
        path.write_text(text)
        with pytest.raises(InputError, match=message.replace("[", r"\[")):
            build_probes(path)
    with pytest.raises(InputError, match="no such probe file"):
        build_probes(tmp_path / "absent.yaml")


def test_probe_regression_recovers_planted_coefficients():
    rng = np.random.default_rng(0)
    n = 200
    diffs = {
        "length": rng.choice([0.0, 0.3, 0.6, 1.1], size=n),
        "politeness": rng.choice([0.0, 0.2], size=n),
        "sarcasm": np.zeros(n),
    }
    truth = {"length": 0.8, "politeness": -1.5}
    y = sum(truth[a] * diffs[a] for a in truth) + rng.normal(0, 0.1, size=n)
    est = probe_regression(diffs, y, ["length", "politeness", "sarcasm"])
    for a, t in truth.items():
        assert est[a].ci_low <= t <= est[a].ci_high and est[a].significant, (a, est[a])
    assert est["sarcasm"].estimate is None and "no variation" in est["sarcasm"].note


def test_policy_shift_is_a_paired_mean_with_an_interval():
    ref = [[f"word {'x ' * i}".strip()] for i in range(30)]
    longer = [[r[0] + " extra words here"] for r in ref]
    shift, details = policy_shift(longer, ref, ["length"])
    diffs = [log_words(a[0]) - log_words(b[0]) for a, b in zip(longer, ref, strict=True)]
    assert shift["length"].estimate == pytest.approx(np.mean(diffs))
    assert shift["length"].ci_low > 0 and shift["length"].significant
    assert details["words"]["policy"] == pytest.approx(details["words"]["reference"] + 3)
    same, _ = policy_shift(ref, ref, ["length"])
    assert same["length"].estimate == 0 and not same["length"].significant


def test_policy_contrast_is_paired_between_runs_sampled_alike():
    rng = np.random.default_rng(0)
    # prompts differ a lot in reply length; run b adds 2 words to run a's reply to every prompt
    a = [[" ".join(["w"] * int(n))] for n in rng.integers(3, 60, size=40)]
    b = [[r[0] + " two more"] for r in a]
    report = {"runs": [{"run": "runs/bal/ppo"}, {"run": "runs/long/ppo"}, {"run": "runs/x/ppo"}]}
    key = ("ref", "prompts.jsonl", 40, 1, 64, 0.7)
    other = ("ref", "prompts.jsonl", 40, 1, 32, 0.7)  # sampled with another length: no pair
    (c,) = policy_contrasts(report, [(key, a), (key, b), (other, b)], ["length"])
    assert (c["run"], c["minus"], c["n_prompts"]) == ("long/ppo", "bal/ppo", 40)
    diffs = [log_words(x[0]) - log_words(y[0]) for x, y in zip(b, a, strict=True)]
    e = c["attributes"]["length"]
    assert e["estimate"] == pytest.approx(np.mean(diffs)) and e["significant"]
    # the prompt-to-prompt spread of lengths cancels: far narrower than the unpaired interval
    spread = np.std([log_words(x[0]) for x in b], ddof=1) * np.sqrt(2 / 40) * 1.96 * 2
    assert e["ci_high"] - e["ci_low"] < spread / 5
    # the first run with a policy stage is the base; none at all: no contrasts
    (c,) = policy_contrasts(report, [None, (key, b), (key, a)], ["length"])
    assert (c["run"], c["minus"]) == ("x/ppo", "long/ppo")
    assert c["attributes"]["length"]["estimate"] == pytest.approx(-np.mean(diffs))
    assert policy_contrasts(report, [None, None, None], ["length"]) == []


def test_rater_stage_sees_the_length_loving_pool():
    items = synthetic_items(300, seed=1)
    loving = load_pool(ROOT / "configs" / "pools" / "length-loving.yaml")
    balanced = load_pool(ROOT / "configs" / "pools" / "balanced.yaml")
    long_est = rater_stage(simulate_judgments(loving, items, 2, seed=1), ["length", "politeness"])
    # With every attribute the pool weighs in the model: alone, length would take the credit
    # for what travels with it in these replies (refusals are short).
    everything = ["length", "politeness", "hedging", "refusal", "formatting"]
    flat_est = rater_stage(simulate_judgments(balanced, items, 2, seed=1), everything)
    assert long_est["length"].significant and long_est["length"].estimate > 0.4
    assert long_est["politeness"].estimate > 0
    assert flat_est["length"].ci_low < long_est["length"].ci_low
    assert flat_est["length"].ci_low <= 0.0 <= flat_est["length"].ci_high


def _fake_run(path: Path, kind: str, inputs: dict, config: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "provenance.json").write_text(json.dumps({"kind": kind, "inputs": inputs}))
    (path / "config.yaml").write_text(json.dumps(config or {}))
    return path


def test_trace_run_follows_provenance(tmp_path):
    from rlhfkit.train.run import describe_input

    data = tmp_path / "prefs.jsonl"
    data.write_text("{}\n")
    rm = _fake_run(tmp_path / "rm", "reward", {"data": describe_input(data)}, {"format": "trl"})
    (rm / "model").mkdir()
    ppo = _fake_run(
        tmp_path / "ppo",
        "ppo",
        {"policy": {"name": "default"}, "reward": describe_input(rm / "model")},
        {"eval_prompts": "held.jsonl", "temperature": 0.9, "max_new_tokens": 33},
    )
    lineage = trace_run(ppo)
    assert lineage.preference_data == data and lineage.data_format == "trl"
    assert lineage.reward_model == rm / "model" and lineage.policy == ppo / "model"
    assert (lineage.reference, lineage.eval_prompts) == ("default", "held.jsonl")
    assert (lineage.temperature, lineage.max_new_tokens) == (0.9, 33)
    assert lineage.warnings == []
    data.write_text("changed\n")
    assert any("changed since training" in w for w in trace_run(ppo).warnings)
    dpo = _fake_run(
        tmp_path / "dpo", "dpo", {"model": {"name": "tiny"}, "data": describe_input(data)}
    )
    lineage = trace_run(dpo)
    assert lineage.reward_model is None and lineage.preference_data == data


def test_trace_run_garbage(tmp_path):
    with pytest.raises(InputError, match="no provenance.json"):
        trace_run(tmp_path)
    (tmp_path / "provenance.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        trace_run(tmp_path)
    (tmp_path / "provenance.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="expected an object"):
        trace_run(tmp_path)


def test_cli_propagation_errors_exit_2(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("items: [")
    cases = [
        (["audit", "propagation", str(tmp_path / "nope")], "no provenance.json"),
        (["audit", "propagation", str(tmp_path), "--attribute", "charm"], "--attribute 'charm'"),
        (["audit", "propagation", str(tmp_path), "--probes", str(tmp_path / "bad.yaml")], "YAML"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "bias_propagation", ROOT / "benchmarks" / "bias_propagation.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_benchmark_fast_mode_end_to_end(tmp_path, capsys, shared_data):
    """Both pools label the same pairs through a live server; tiny RMs and PPO runs; audit."""
    out = tmp_path / "bp"
    assert _benchmark().main(["--fast", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (out / "audit" / "propagation-length.png").stat().st_size > 1000
    assert (out / "audit" / "propagation.txt").read_text().startswith("attribute")
    for pool in ("balanced", "length-loving"):
        assert result["platform"][pool]["judgments"] == result["pairs"] * 2  # overlap k = 2
        for stage in ("raters", "reward_model", "policy"):
            assert result["length"][stage][pool] is not None, (stage, pool)
    # The planted difference is visible where it was planted: in the raters' judgments.
    raters = result["length"]["raters"]
    assert raters["length-loving"]["estimate"] > raters["balanced"]["estimate"]

    # The CLI reads the same runs through their provenance.
    runs = [str(out / pool / "ppo") for pool in ("balanced", "length-loving")]
    argv = ["audit", "propagation", *runs, "--attribute", "length", "--attribute", "politeness"]
    argv += ["--prompts", str(out / "heldout-prompts.jsonl"), "--n-prompts", "4", "--samples", "1"]
    assert main([*argv, "--json", "--out", str(tmp_path / "audit")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [Path(r["run"]).parent.name for r in report["runs"]] == ["balanced", "length-loving"]
    for r in report["runs"]:
        assert set(r["stages"]) == {"raters", "reward_model", "policy"}
        assert r["lineage"]["preference_data"].endswith("preferences.jsonl")
    assert sorted(p.name for p in (tmp_path / "audit").glob("*.png")) == [
        "propagation-length.png",
        "propagation-politeness.png",
    ]
    table = format_propagation(report)  # what the CLI prints without --json
    assert (
        table.startswith("attribute") and "balanced/ppo" in table and "length-loving/ppo" in table
    )
    assert (tmp_path / "audit" / "propagation.txt").read_text().strip() == table.strip()
    (paired,) = report["policy_contrasts"]  # the two policies met the same prompts and seeds
    assert (paired["run"], paired["minus"]) == ("length-loving/ppo", "balanced/ppo")
    assert set(paired["attributes"]) == {"length", "politeness"}
    assert "length-loving/ppo minus balanced/ppo (paired over 4 prompts" in table

    # Rerun only PPO and the audit from the same judgments and reward models: the raters' and
    # the reward models' stages are the same numbers; the new PPO runs live in the new --out.
    again = tmp_path / "bp-again"
    argv = ["--fast", "--out", str(again), "--labels-from", str(out), "--ppo-steps", "1", "--json"]
    assert _benchmark().main(argv) == 0
    rerun = json.loads(capsys.readouterr().out)
    assert rerun["labels_from"] == str(out) and rerun["settings"]["ppo_steps"] == 1
    assert rerun["length"]["raters"] == result["length"]["raters"]
    assert rerun["length"]["reward_model"] == result["length"]["reward_model"]
    assert rerun["platform"] == result["platform"] and rerun["pairs"] == result["pairs"]
    assert len((again / "balanced" / "ppo" / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (again / "balanced" / "rm").exists()
    assert rerun["length"]["policy"]["contrast_paired"] is not None

    # The audit alone, of the first run's PPO runs: the same numbers, nothing trained again.
    audit = tmp_path / "bp-audit"
    argv = ["--fast", "--out", str(audit), "--labels-from", str(out), "--audit-only", "--json"]
    assert _benchmark().main(argv) == 0
    audited = json.loads(capsys.readouterr().out)
    assert audited["length"] == result["length"] and audited["settings"] == result["settings"]
    assert not (audit / "balanced").exists() and (audit / "audit" / "propagation.json").exists()
    # more replies per held-out prompt: a closer look at the same policies, nothing retrained
    argv = ["--fast", "--out", str(tmp_path / "bp-2"), "--labels-from", str(out), "--audit-only"]
    assert _benchmark().main([*argv, "--samples", "2", "--ppo-steps", "9", "--json"]) == 0
    closer = json.loads(capsys.readouterr().out)
    assert closer["settings"] == {**result["settings"], "samples": 2}  # --ppo-steps: not audited
    report = json.loads((tmp_path / "bp-2" / "audit" / "propagation.json").read_text())
    assert report["settings"]["samples"] == 2
    assert closer["length"]["reward_model"] == result["length"]["reward_model"]
    with pytest.raises(SystemExit):
        _benchmark().main(["--fast", "--out", str(audit), "--audit-only"])
    assert "--audit-only needs --labels-from" in capsys.readouterr().err
    # A run stopped after its PPO runs, before the audit wrote result.json, can be audited: the
    # pair count and exports come from its files, the settings from this command.
    # Here on other held-out prompts (real ones, MT-Bench's first turns).
    (out / "result.json").unlink()
    argv = ["--fast", "--out", str(tmp_path / "bp-late"), "--labels-from", str(out)]
    mt_bench = str(shared_data("mt-bench/question.jsonl"))
    assert _benchmark().main([*argv, "--audit-only", "--heldout-file", mt_bench, "--json"]) == 0
    late = json.loads(capsys.readouterr().out)
    for stage in ("raters", "reward_model"):
        assert late["length"][stage] == result["length"][stage]
    held = (tmp_path / "bp-late" / "heldout-prompts.jsonl").read_text().splitlines()
    assert len(held) == 4 and "Hawaii" in held[0]
    assert late["length"]["policy"]["balanced"]["n"] == 4 and late["pairs"] == result["pairs"]
    assert (
        late["platform"]["balanced"]["exported_pairs"]
        == (result["platform"]["balanced"]["exported_pairs"])
    )
    with pytest.raises(InputError, match="result.json not found"):  # PPO and audit need it
        _benchmark().main(argv)


def test_benchmark_heldout_file_real_prompts_and_garbage(tmp_path, shared_data):
    bench = _benchmark()
    mt_bench = shared_data("mt-bench/question.jsonl")
    held = bench.read_heldout(mt_bench, 32)
    assert len(held) == 32 and held[0][0]["role"] == "user" and "Hawaii" in held[0][0]["content"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"turns": "not a list"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: expected 'turns'"):
        bench.read_heldout(bad, 4)
    with pytest.raises(InputError, match=r"--heldout-file .*nope.jsonl: no such file"):
        bench.read_heldout(tmp_path / "nope.jsonl", 4)
    # a held-out prompt that is also a training prompt is refused before anything runs
    train = bench.load_prompts(8, fast=True)
    leak = tmp_path / "leak.jsonl"
    bench.write_prompts(train[2:4], leak)
    argv = ["--fast", "--pairs", "8", "--heldout-file", str(leak), "--out", str(tmp_path / "o")]
    with pytest.raises(InputError, match="leak.jsonl: it shares prompts with training"):
        bench.main(argv)
    assert not (tmp_path / "o" / "candidates.jsonl").exists()


def test_benchmark_labels_from_a_directory_without_a_full_run(tmp_path, capsys):
    argv = ["--fast", "--out", str(tmp_path / "o"), "--labels-from", str(tmp_path / "none")]
    with pytest.raises(InputError, match="none/heldout-prompts.jsonl not found"):
        _benchmark().main(argv)
    # held-out prompts alone are not a run: PPO again needs its result.json
    (tmp_path / "none").mkdir()
    _benchmark().write_prompts([[{"role": "user", "content": "q"}]] * 2, tmp_path / "none" / "h")
    (tmp_path / "none" / "h").rename(tmp_path / "none" / "heldout-prompts.jsonl")
    with pytest.raises(InputError, match="none/result.json not found"):
        _benchmark().main(argv)
