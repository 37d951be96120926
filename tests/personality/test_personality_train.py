"""Personality rewards in PPO, personality train (PPO and DPO) and compare, on the tiny model."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest
import torch
from tests.train.tiny_data import write_demos

from rlhfkit.cli import main
from rlhfkit.errors import InputError
from rlhfkit.models import tiny_policy
from rlhfkit.models.heads import load_reward_model
from rlhfkit.personality import PersonalitySpec, composite_reward, load_spec, score, term_spreads
from rlhfkit.personality.compare import compare_runs, format_comparison, mean_ci
from rlhfkit.personality.spec import MIN_SPREAD
from rlhfkit.train import ppo
from rlhfkit.train.rewards import (
    PersonalityReward,
    RewardModelReward,
    load_reward,
    normalize_raw,
)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]


@pytest.fixture
def prompts(tmp_path):
    return write_demos(tmp_path / "prompts.jsonl", n=16)


@pytest.fixture
def heads_model(tmp_path):
    """A tiny reward model with 'helpful' and 'harmless' heads, saved as a directory."""
    rm = load_reward_model("tiny", heads=["helpful", "harmless"])
    path = tmp_path / "rm-heads"
    rm.model.save_pretrained(path)
    rm.tokenizer.save_pretrained(path)
    return path


def _rollout(tok, texts):
    ids = [tok(t, add_special_tokens=False)["input_ids"] or [tok.eos_token_id] for t in texts]
    width = max(map(len, ids))
    batch = torch.full((len(ids), width), tok.pad_token_id)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        batch[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return batch, mask


def test_personality_reward_is_the_specs_composite():
    tok = tiny_policy().tokenizer
    reward = load_reward("personality:concise", tok)
    assert isinstance(reward, PersonalityReward)
    texts = ["Yes.", "Well, it might perhaps depend on many, many things, I think, in some cases."]
    prompts = [[{"role": "user", "content": "q"}]] * 2
    raw = reward.raw(prompts, texts, *_rollout(tok, texts))
    expected = composite_reward(load_spec("concise"), texts)
    assert raw.tolist() == pytest.approx(expected, abs=1e-6)
    assert raw[0] > raw[1]
    reward.normalization.update(offset=[1.0], scale=[2.0])
    assert normalize_raw(raw, reward.normalization).tolist() == pytest.approx(
        [(x - 1.0) / 2.0 for x in expected], abs=1e-6
    )


def test_fit_puts_each_term_in_sd_units():
    tok = tiny_policy().tokenizer
    reward = load_reward("personality:concise", tok)
    texts = ["Yes.", "Yes, I might say so.", "word " * 30, "Well, perhaps, it may depend."]
    prompts = [[{"role": "user", "content": "q"}]] * len(texts)
    rows = _rollout(tok, texts)
    before = reward.raw(prompts, texts, *rows)
    reward.fit(prompts, texts, *rows)
    spreads = reward.normalization["term_spreads"]
    spec = load_spec("concise")
    assert spreads == pytest.approx(term_spreads(spec, texts))
    after = reward.raw(prompts, texts, *rows)
    assert after.tolist() == pytest.approx(composite_reward(spec, texts, None, spreads), abs=1e-6)
    assert after.tolist() != pytest.approx(before.tolist())
    # each term now spreads by its weight among the fitted replies
    for term, weight in spec.weights.items():
        one = PersonalitySpec("one", "d", {term: weight}, 1.0)
        values = composite_reward(one, texts, None, spreads)
        spread = statistics.stdev(score(term, texts))
        expected = abs(weight) * min(1.0, spread / MIN_SPREAD)  # below the floor: less
        assert statistics.stdev(values) == pytest.approx(expected)


def test_head_terms_come_from_the_named_reward_model(heads_model):
    tok = tiny_policy().tokenizer
    reward = load_reward(f"personality:helpful-harmless@{heads_model}", tok)
    texts = ["Thank you, happy to help.", "No."]
    ids, mask = _rollout(tok, texts)
    heads = reward.head_scores([[]] * 2, texts, ids, mask)
    assert set(heads) == {"helpful", "harmless"}
    assert all(0.0 <= v <= 1.0 for vs in heads.values() for v in vs)
    expected = composite_reward(reward.spec, texts, heads)
    assert reward.raw([[]] * 2, texts, ids, mask).tolist() == pytest.approx(expected, abs=1e-6)


def test_fit_scores_the_heads_once_for_the_normalisation_that_follows(heads_model):
    tok = tiny_policy().tokenizer
    reward = load_reward(f"personality:helpful-harmless@{heads_model}", tok)
    texts, other = ["Thank you, happy to help.", "No.", "Maybe."], ["Sure.", "Never.", "Yes!"]
    rows, other_rows = _rollout(tok, texts), _rollout(tok, other)
    prompts = [[]] * 3
    fresh = reward.head_scores(prompts, texts, *rows)
    calls = []
    real = reward.head_scores
    reward.head_scores = lambda *a: calls.append(a[1]) or real(*a)
    reward.fit(prompts, texts, *rows)
    assert calls == [texts]
    spreads = reward.normalization["term_spreads"]
    expected = composite_reward(reward.spec, texts, fresh, spreads)
    # the same replies right after the fit: the fit's head scores, no second forward
    assert reward.raw(prompts, texts, *rows).tolist() == pytest.approx(expected, abs=1e-6)
    assert calls == [texts]
    # once only, and never for other replies: those are scored afresh
    assert reward.raw(prompts, texts, *rows).tolist() == pytest.approx(expected, abs=1e-6)
    reward.fit(prompts, texts, *rows)
    reward.raw(prompts, other, *other_rows)
    assert calls == [texts, texts, texts, other]


def test_two_specs_rank_the_same_samples_drawn_once(tmp_path, prompts, monkeypatch):
    import rlhfkit.models
    from rlhfkit.personality.training import (
        Config,
        _policy_identity,
        rank_pairs,
        train_personality,
    )

    monkeypatch.setattr("rlhfkit.personality.training._RANKING_SAMPLES", {})

    calls = []
    real = rlhfkit.models.generate
    monkeypatch.setattr(
        rlhfkit.models, "generate", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    base = dict(policy="tiny", prompts=str(prompts), samples=3, pair_prompts=6, max_new_tokens=8)
    concise = rank_pairs(Config(spec="concise", **base), load_spec("concise"))
    warm = rank_pairs(Config(spec="warm-and-polite", **base), load_spec("warm-and-polite"))
    assert len(calls) == 1 and concise and warm
    rank_pairs(Config(spec="concise", **{**base, "seed": 1}), load_spec("concise"))
    assert len(calls) == 2  # other samples: drawn afresh
    # a policy directory retrained in place is another policy
    (tmp_path / "pol").mkdir()
    (tmp_path / "pol" / "model.safetensors").write_bytes(b"one")
    before = _policy_identity(str(tmp_path / "pol"))
    (tmp_path / "pol" / "model.safetensors").write_bytes(b"other")
    assert _policy_identity(str(tmp_path / "pol")) != before
    with pytest.raises(InputError, match="--beta: expected a positive number, got 0.0"):
        train_personality(Config(spec="concise", method="dpo", beta=0.0, **base))
    with pytest.raises(InputError, match="--rpo-alpha: expected a number >= 0, got -1"):
        train_personality(Config(spec="concise", method="dpo", rpo_alpha=-1, **base))
    assert len(calls) == 2  # both refused before sampling


def test_reward_references_and_their_errors(tmp_path, heads_model):
    tok = tiny_policy().tokenizer
    assert isinstance(load_reward(str(heads_model), tok), RewardModelReward)
    with pytest.raises(InputError, match="no-such-spec: no such spec file or built-in spec"):
        load_reward("personality:no-such-spec", tok)
    with pytest.raises(InputError, match="name the reward model that scores them"):
        load_reward("personality:helpful-harmless", tok)
    plain = load_reward_model("tiny", heads=["preference"])
    plain.model.save_pretrained(tmp_path / "one-head")
    plain.tokenizer.save_pretrained(tmp_path / "one-head")
    with pytest.raises(InputError, match="no head labelled 'helpful', 'harmless'"):
        load_reward(f"personality:helpful-harmless@{tmp_path / 'one-head'}", tok)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndescription: y\nweights:\n  politness: 1\nkl_budget: 1\n")
    with pytest.raises(InputError, match=r"bad.yaml:4: unknown attribute 'politness'"):
        load_reward(str(bad), tok)
    with pytest.raises(InputError, match="--reward"):
        load_reward("", tok)


def test_tiny_ppo_with_a_personality_reward(tmp_path, prompts):
    out = ppo.train(
        ppo.Config(
            policy="tiny",
            reward="personality:warm-and-polite",
            prompts=str(prompts),
            out=tmp_path / "ppo",
            batch_size=4,
            max_steps=2,
            max_new_tokens=8,
            lr=1e-3,
            normalize_samples=4,
            eval_prompts=str(prompts),
            eval_samples=4,
        )
    )
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["policy/ratio_first"] == 1.0
        for key in ("objective/scores", "objective/kl", "val/error", "policy/approxkl"):
            assert key in row and row[key] == row[key]  # present and not NaN
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["inputs"]["reward"]["personality"] == "warm-and-polite"
    assert prov["inputs"]["reward"]["units"] == "sd"
    norm = prov["reward_normalization"]
    assert set(norm) >= {"offset", "scale", "term_spreads"}
    # one spread per weighted term, fitted on the starting policy's samples, floor included
    assert set(norm["term_spreads"]) == set(load_spec("warm-and-polite").weights)
    assert all(MIN_SPREAD <= v <= 1.0 for v in norm["term_spreads"].values())
    evaluation = json.loads((out / "eval.json").read_text())
    assert {"before", "after"} <= set(evaluation)
    assert (out / "model" / "config.json").exists()


def test_value_model_starts_from_value_init_or_the_policy(tmp_path, heads_model):
    from rlhfkit.train.rewards import value_model_init

    tok = tiny_policy().tokenizer
    reward = load_reward("personality:concise", tok)
    body = value_model_init(reward, None, "tiny")
    policy_body = tiny_policy().model.model.state_dict()
    for name, tensor in body.model.state_dict().items():
        assert torch.equal(tensor, policy_body[name]), name
    assert body.config.num_labels == 1
    from_rm = value_model_init(reward, str(heads_model), "tiny")
    assert from_rm.config.num_labels == 2
    rm_reward = load_reward(str(heads_model), tok)
    copied = value_model_init(rm_reward, None, "tiny")
    assert copied is not rm_reward.rm.model
    assert torch.equal(copied.score.weight, rm_reward.rm.model.score.weight)


def test_personality_train_ppo_and_dpo_then_compare_cli(tmp_path, prompts, capsys):
    base = ["--policy", "tiny", "--prompts", str(prompts), "--max-new-tokens", "8"]
    code = main(
        ["personality", "train", "concise", *base, "--out", str(tmp_path / "c"), "--steps", "2"]
        + ["--batch-size", "4", "--lr", "1e-3"]
    )
    assert code == 0
    run = Path(json.loads(capsys.readouterr().out)["run"])
    info = json.loads((run / "personality.json").read_text())
    assert info["personality"] == "concise" and info["method"] == "ppo"
    assert json.loads((run / "config.yaml").read_text().split("target_kl: ")[1].split()[0]) == 6.0
    # the controller's horizon is sized to the run (2 steps of 4), so the budget can bind
    assert "kl_horizon: 4\n" in (run / "config.yaml").read_text()
    # the spec's scores are the whole reward: no fixed score replaces unfinished replies
    assert "missing_eos_penalty: null" in (run / "config.yaml").read_text()

    code = main(
        ["personality", "train", "warm-and-polite", *base, "--method", "dpo"]
        + ["--out", str(tmp_path / "w"), "--steps", "2", "--batch-size", "2", "--samples", "3"]
        + ["--pair-prompts", "8", "--lr", "1e-3"]
    )
    assert code == 0, capsys.readouterr().err
    dpo_run = Path(json.loads(capsys.readouterr().out)["run"])
    pairs = [json.loads(x) for x in (dpo_run / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["rater_id"] == "personality:warm-and-polite" for p in pairs)
    assert all(
        p["margin"] > 0 and max(p["meta"]["rewards"]) > min(p["meta"]["rewards"]) for p in pairs
    )
    assert metrics(dpo_run)

    held_out = write_demos(tmp_path / "heldout.jsonl", n=6, seed=99)
    code = main(
        ["personality", "compare", str(run), str(dpo_run), "tiny", "--prompts", str(held_out)]
        + ["--n-prompts", "5", "--max-new-tokens", "8", "--json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in report["runs"]] == ["concise", "warm-and-polite", "tiny"]
    assert report["n_prompts"] == 5
    for r in report["runs"]:
        for attr in ("politeness", "concision", "length"):
            p = r["profile"][attr]
            assert p["low"] <= p["mean"] <= p["high"] and p["n"] == 5
    assert len(report["samples"]) == 3
    assert set(report["samples"][0]["replies"]) == {"concise", "warm-and-polite", "tiny"}
    # paired differences from the first run: their mean is the difference of the means
    assert [(d["run"], d["minus"]) for d in report["differences"]] == [
        ("warm-and-polite", "concise"),
        ("tiny", "concise"),
    ]
    profiles = {r["label"]: r["profile"] for r in report["runs"]}
    for d in report["differences"]:
        for attr in ("politeness", "length"):
            diff = d["difference"][attr]
            expected = profiles[d["run"]][attr]["mean"] - profiles["concise"][attr]["mean"]
            assert diff["mean"] == pytest.approx(expected, abs=2e-4)
            assert diff["low"] <= diff["mean"] <= diff["high"]
    assert "warm-and-polite minus concise (paired, same prompts):" in format_comparison(report)

    # the same model twice differs by exactly nothing; an extra contrast reverses the pair
    same = compare_runs(
        ["tiny", "tiny"], str(held_out), n_prompts=3, max_new_tokens=8, contrasts=[(0, 1)]
    )
    first, reverse = same["differences"]
    assert (first["run"], first["minus"]) == ("tiny#2", "tiny")
    assert (reverse["run"], reverse["minus"]) == ("tiny", "tiny#2")
    for d in (first, reverse):
        assert all(v["mean"] == v["low"] == v["high"] == 0 for v in d["difference"].values())
    for bad in ([(0, 0)], [(2, 0)], [(-1, 1)]):
        with pytest.raises(InputError, match="contrast"):
            compare_runs(["tiny", "tiny"], str(held_out), contrasts=bad)

    code = main(
        ["personality", "compare", str(run), "--prompts", str(held_out), "--n-prompts", "2"]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "politeness" in text and "concise" in text and "prompt:" in text


def test_compare_leaves_out_training_prompts(tmp_path, prompts, capsys):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    tiny_policy().model.save_pretrained(run / "model")
    tiny_policy().tokenizer.save_pretrained(run / "model")
    (run / "config.yaml").write_text(f"prompts: {prompts}\n")
    with pytest.raises(InputError, match="no held-out prompts left"):
        compare_runs([str(run)], str(prompts))

    # a DPO run: its config names the ranked pairs, personality.json the prompts they came from
    (run / "config.yaml").write_text(f"data: {run / 'pairs.jsonl'}\n")
    from rlhfkit.train.base import read_prompts

    first = read_prompts(str(prompts))[0]
    pair = {"prompt": first, "chosen": "Thanks!", "rejected": "No."}
    (run / "pairs.jsonl").write_text(json.dumps(pair) + "\n")
    report = compare_runs([str(run)], str(prompts), max_new_tokens=2)
    assert report["excluded_training_prompts"] == 1
    (run / "personality.json").write_text(json.dumps({"prompts": str(prompts)}))
    with pytest.raises(InputError, match="no held-out prompts left"):
        compare_runs([str(run)], str(prompts))


def test_compare_samples_several_replies_and_scores_their_mean(tmp_path, monkeypatch, capsys):
    import rlhfkit.models

    held_out = write_demos(tmp_path / "heldout.jsonl", n=4, seed=99)
    calls = []

    def fake_replies(policy, prompts, **kwargs):
        calls.append({"prompts": prompts, **kwargs})
        # prompts 0 and 2: one polite reply of three; prompts 1 and 3: none
        return [
            "Thank you, happy to help." if i % 3 == 0 and (i // 3) % 2 == 0 else "Paris."
            for i in range(len(prompts))
        ]

    monkeypatch.setattr(rlhfkit.models, "generate_replies", fake_replies)
    out = tmp_path / "replies.jsonl"
    report = compare_runs(
        ["tiny", "tiny"],
        str(held_out),
        n_prompts=4,
        temperature=0.7,
        replies_per_prompt=3,
        seed=5,
        replies_out=out,
    )
    sent = calls[0]["prompts"]
    # each prompt three times in a row, in the held-out order
    assert len(sent) == 12 and sent[0] == sent[1] == sent[2] != sent[3] == sent[4] == sent[5]
    assert calls[0]["temperature"] == 0.7 and calls[0]["seed"] == 5
    assert report["temperature"] == 0.7 and report["replies_per_prompt"] == 3
    polite, plain = score("politeness", ["Thank you, happy to help.", "Paris."])
    # each prompt scores the mean of its three replies; the interval is over the 4 prompts
    one_in_three = (polite + 2 * plain) / 3
    expected = mean_ci([one_in_three, plain, one_in_three, plain])
    profile = report["runs"][0]["profile"]["politeness"]
    assert profile["n"] == 4
    for key in ("mean", "low", "high"):
        assert profile[key] == pytest.approx(expected[key], abs=1e-4)
    assert profile["low"] < profile["mean"] < profile["high"]
    assert report["samples"][0]["replies"]["tiny"] == "Thank you, happy to help."
    assert report["samples"][1]["replies"]["tiny"] == "Paris."
    assert "3 replies per prompt sampled at temperature 0.7" in format_comparison(report)
    # every reply, its prompt and draw, and its scores: 2 runs x 4 prompts x 3 draws
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 24
    assert [(r["label"], r["prompt_index"], r["draw"]) for r in rows[:4]] == [
        ("tiny", 0, 0),
        ("tiny", 0, 1),
        ("tiny", 0, 2),
        ("tiny", 1, 0),
    ]
    assert rows[0]["reply"] == "Thank you, happy to help." and rows[1]["reply"] == "Paris."
    assert (
        rows[0]["prompt"] == sent[0][-1]["content"] and rows[3]["prompt"] == sent[3][-1]["content"]
    )
    assert rows[0]["scores"]["politeness"] == pytest.approx(polite, abs=1e-4)
    assert {r["label"] for r in rows} == {"tiny", "tiny#2"}

    # the same model sampled from the same seed: every difference is exactly 0
    monkeypatch.undo()
    same = compare_runs(
        ["tiny", "tiny"],
        str(held_out),
        n_prompts=2,
        max_new_tokens=6,
        temperature=1.0,
        replies_per_prompt=2,
    )
    diff = same["differences"][0]["difference"]
    assert all(v["mean"] == v["low"] == v["high"] == 0 for v in diff.values())
    assert same["runs"][0]["profile"]["length"]["n"] == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replies_per_prompt": 3}, "greedy replies to a prompt are all the same"),
        ({"temperature": 1.0, "replies_per_prompt": 0}, "expected 1 or more"),
        ({"temperature": 1.0, "replies_per_prompt": 2.5}, "whole number"),
        ({"temperature": -0.5}, "temperature: expected a number from 0"),
        ({"temperature": float("nan")}, "temperature: expected a number from 0"),
        ({"temperature": "hot"}, "temperature: expected a number from 0"),
        ({"temperature": True}, "temperature: expected a number from 0"),
        ({"temperature": 11.0}, "temperature: expected a number from 0"),
        ({"temperature": 1.0, "seed": -1}, "seed: expected a whole number"),
        ({"temperature": 1.0, "seed": 2**70}, "seed: expected a whole number"),
    ],
)
def test_compare_refuses_bad_decoding_before_loading_anything(tmp_path, kwargs, message):
    # a run name that does not exist: the decoding check comes first, and nothing is generated
    with pytest.raises(InputError, match=message):
        compare_runs([str(tmp_path / "missing")], str(tmp_path / "none.jsonl"), **kwargs)


def test_compare_refuses_a_replies_file_in_a_missing_folder_before_generating(tmp_path):
    held_out = write_demos(tmp_path / "heldout.jsonl", n=2, seed=99)
    for bad, message in ((tmp_path / "no" / "r.jsonl", "does not exist"), (tmp_path, "directory")):
        with pytest.raises(InputError, match=message):
            compare_runs(["tiny"], str(held_out), replies_out=bad)
    assert not (tmp_path / "no").exists()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # root writes anywhere: nothing to test then
        with pytest.raises(InputError, match="not writable"):
            compare_runs(["tiny"], str(held_out), replies_out=locked / "r.jsonl")


def test_cli_compare_greedy_with_several_replies_is_refused(tmp_path, capsys):
    held_out = write_demos(tmp_path / "heldout.jsonl", n=2, seed=99)
    argv = ["personality", "compare", "tiny", "--prompts", str(held_out)]
    assert main(argv + ["--replies-per-prompt", "2"]) == 2
    assert "sample them (temperature above 0)" in capsys.readouterr().err
    assert main(argv + ["--contrast", "0", "3"]) == 2
    assert "contrast (0, 3): expected two different run indices" in capsys.readouterr().err


def test_cli_compare_contrast_adds_a_paired_difference(tmp_path, capsys):
    held_out = write_demos(tmp_path / "heldout.jsonl", n=2, seed=99)
    argv = ["personality", "compare", "tiny", "tiny", "--prompts", str(held_out), "--json"]
    assert main(argv + ["--max-new-tokens", "4", "--contrast", "0", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    pairs = [(d["run"], d["minus"]) for d in report["differences"]]
    assert pairs == [("tiny#2", "tiny"), ("tiny", "tiny#2")]


def test_mean_ci_contains_the_mean_and_shrinks_with_n():
    wide = mean_ci([0.0, 1.0, 0.5, 0.25])
    narrow = mean_ci([0.0, 1.0, 0.5, 0.25] * 25)
    assert wide["low"] < wide["mean"] < wide["high"]
    assert narrow["high"] - narrow["low"] < wide["high"] - wide["low"]
    assert mean_ci([0.3]) == {"mean": 0.3, "low": 0.3, "high": 0.3, "n": 1}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["personality", "train", "no-such-spec", "--policy", "tiny", "--prompts", "x"],
            "no-such-spec: no such spec file or built-in spec",
        ),
        (["personality", "train", "concise", "--policy", "tiny"], "--prompts"),
        (
            [
                "personality",
                "train",
                "concise",
                "--policy",
                "tiny",
                "--prompts",
                "p.jsonl",
                "--method",
                "sgd",
            ],
            "expected one of ppo, dpo",
        ),
        (["personality", "compare", "no/such/run", "--prompts", "p.jsonl"], "no/such/run"),
    ],
)
def test_cli_garbage_is_a_clear_error(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_help(capsys):
    for argv in (["personality", "train", "--help"], ["personality", "compare", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    assert "--method" in capsys.readouterr().out
