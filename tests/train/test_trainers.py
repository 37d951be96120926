"""The three steps on the tiny model: they learn, write their run directory, resume exactly,
and give the same result on one process and on two."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from rlhfkit.cli import main
from rlhfkit.errors import InputError
from rlhfkit.models import tiny_policy
from rlhfkit.models.heads import load_reward_model
from rlhfkit.train import ppo, reward, run, sft
from tests.train.tiny_data import write_demos, write_pairs


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture
def data(tmp_path):
    return write_demos(tmp_path / "demos.jsonl"), write_pairs(tmp_path / "pairs.jsonl")


def sft_config(tmp_path, demos, **kw) -> sft.Config:
    values = dict(
        model="tiny",
        data=str(demos),
        out=tmp_path / "sft",
        batch_size=8,
        grad_accum=2,
        lr=1e-3,
        max_steps=4,
        save_every=0,
    )
    values.update(kw)
    return sft.Config(**values)


def tiny_reward_model(tmp_path, data, steps: int) -> Path:
    """A reward model trained for ``steps`` on the tiny pairs; returns its model directory."""
    cfg = reward.Config(
        model="tiny", data=str(data[1]), out=tmp_path / "rm", batch_size=8, lr=1e-3, max_steps=steps
    )
    return reward.train(cfg) / "model"


def test_sft_writes_run_and_changes_every_parameter(tmp_path, data):
    out = sft.train(sft_config(tmp_path, data[0]))
    for name in ("config.yaml", "metrics.jsonl", "provenance.json", "model/config.json"):
        assert (out / name).exists(), name
    assert list((out / "tb").iterdir()), "TensorBoard events"
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["kind"] == "sft" and len(prov["inputs"]["data"]["sha256"]) == 64
    before = tiny_policy().model.state_dict()
    after = weights(out / "model")
    for name, tensor in before.items():
        if name in after:
            assert not torch.equal(tensor, after[name]), f"{name} did not change"


def test_sft_loss_is_on_response_tokens_only():
    tok = tiny_policy().tokenizer
    ids, n_prompt = sft.encode_demonstration(
        tok, [{"role": "user", "content": "x" * 50}], "yes", 20
    )
    assert len(ids) == 20
    assert ids[-1] == tok.eos_token_id  # EOS kept in the labels
    assert tok.decode(ids[n_prompt:-1]) == "yes"  # the prompt was cut from the left, not the reply


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, data, monkeypatch):
    whole = sft.train(sft_config(tmp_path, data[0], out=tmp_path / "whole"))

    class Crash(Exception):
        pass

    real_save = sft.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Crash

    monkeypatch.setattr(sft, "save_checkpoint", save_then_crash)
    cfg = sft_config(tmp_path, data[0], out=tmp_path / "crashed", save_every=2)
    with pytest.raises(Crash):
        sft.train(cfg)
    assert not (tmp_path / "crashed" / "model").exists()
    monkeypatch.setattr(sft, "save_checkpoint", real_save)
    resumed = sft.train(
        sft_config(tmp_path, data[0], out=tmp_path / "crashed", save_every=2, resume=True)
    )
    a, b = metrics(whole), metrics(resumed)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        assert ra["train/loss"] == pytest.approx(rb["train/loss"], rel=1e-5)
    wa, wb = weights(whole / "model"), weights(resumed / "model")
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6)


def test_existing_run_needs_resume(tmp_path, data):
    sft.train(sft_config(tmp_path, data[0], max_steps=1))
    assert (
        main(["sft", "--model", "tiny", "--data", str(data[0]), "--out", str(tmp_path / "sft")])
        == 2
    )


def test_batch_arithmetic_is_checked(tmp_path, data, capsys):
    code = main(
        [
            "sft",
            "--model",
            "tiny",
            "--data",
            str(data[0]),
            "--out",
            str(tmp_path / "x"),
            "--batch-size",
            "6",
            "--grad-accum",
            "4",
        ]
    )
    assert code == 2
    assert "--grad-accum" in capsys.readouterr().err


def test_reward_model_learns_and_loads_with_auto_class(tmp_path, data):
    out = reward.train(
        reward.Config(
            model="tiny",
            data=str(data[1]),
            out=tmp_path / "rm",
            batch_size=8,
            lr=1e-3,
            max_steps=8,
            eval_fraction=0.25,
        )
    )
    rows = metrics(out)
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    summary = json.loads((out / "eval.json").read_text())
    assert summary["heldout"]["n"] == 8
    auto = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert auto.config.num_labels == 1
    norm = load_reward_model(out / "model").model.config.rlhfkit_reward
    assert len(norm["offset"]) == 1 and norm["scale"][0] > 0
    before = load_reward_model("tiny").model.state_dict()
    after = weights(out / "model")
    changed = [n for n in before if n in after and not torch.equal(before[n], after[n])]
    assert len(changed) == len(before), set(before) - set(changed)


def test_reward_eval_cli_prints_json(tmp_path, data, capsys):
    out = reward.train(
        reward.Config(
            model="tiny", data=str(data[1]), out=tmp_path / "rm", batch_size=8, lr=1e-3, max_steps=2
        )
    )
    capsys.readouterr()
    assert (
        main(["reward", "eval", "--model", str(out / "model"), "--data", str(data[1]), "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"accuracy", "n", "mean_margin", "ece"}
    assert result["n"] == 32


def test_multi_attribute_heads_train_only_on_judged_pairs(tmp_path):
    tok = tiny_policy().tokenizer
    from rlhfkit.data.records import PreferencePair

    pair = PreferencePair(
        prompt=[{"role": "user", "content": "q"}],
        chosen="a",
        rejected="b",
        labels={"chosen": {"helpful": 0, "polite": 1}, "rejected": {"helpful": 1, "polite": 1}},
    )
    enc = reward.encode_pair(tok, pair, 64, ["helpful", "polite"])
    assert enc.head_mask == [True, True, False]  # polite is equal on both sides: not judged
    assert enc.flip == [False, True, False]  # helpful favours the rejected side


def test_ppo_first_ratio_is_exactly_one_and_policy_moves(tmp_path, data):
    rm_dir = tiny_reward_model(tmp_path, data, steps=2)
    out = ppo.train(
        ppo.Config(
            policy="tiny",
            reward=str(rm_dir),
            prompts=str(data[0]),
            out=tmp_path / "ppo",
            batch_size=4,
            num_minibatches=2,
            ppo_epochs=2,
            max_steps=2,
            max_new_tokens=8,
            lr=1e-3,
            normalize_samples=4,
            eval_prompts=str(data[0]),
            eval_samples=4,
        )
    )
    rows = metrics(out)
    for row in rows:
        assert (
            row["policy/ratio_first"] == 1.0
        )  # log-probs computed identically in rollout and update
        for key in (
            "objective/kl",
            "objective/scores",
            "policy/clipfrac",
            "policy/approxkl",
            "policy/entropy",
            "response/length",
            "response/eos_share",
            "val/error",
        ):
            assert key in row
    assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at first
    assert rows[1]["objective/kl"] != 0.0
    before = tiny_policy().model.state_dict()
    after = weights(out / "model")
    saved = [n for n in before if n in after]  # tied lm_head is saved once, as the embedding
    changed = [n for n in saved if not torch.equal(before[n], after[n])]
    assert changed == saved
    evaluation = json.loads((out / "eval.json").read_text())
    assert {"before", "after"} <= set(evaluation)
    # every held-out reply is kept, in prompt order (the demo scores them with the gold reward)
    for when in ("before", "after"):
        replies = evaluation[when]["replies"]
        assert len(replies) == 4 and all(isinstance(r, str) for r in replies)
        assert [s["reply"] for s in evaluation[when]["samples"]] == [r[:300] for r in replies[:3]]
        # ... with its own score, so before and after can be compared reply by reply
        scores = evaluation[when]["scores"]
        assert len(scores) == 4 and len(evaluation[when]["has_eos"]) == 4
        assert sum(scores) / 4 == pytest.approx(evaluation[when]["reward"], abs=1e-3)
    # the tiny policy never emits EOS in 8 tokens: every score is the missing-EOS penalty ...
    assert [r["response/eos_share"] for r in rows] == [0.0, 0.0]
    assert [r["objective/scores"] for r in rows] == [-1.0, -1.0]


def test_ppo_value_freeze_layers_trains_only_the_top_of_the_value_model(
    tmp_path, data, monkeypatch
):
    rm_dir = tiny_reward_model(tmp_path, data, steps=1)
    frozen = {}
    real_freeze = ppo.freeze_bottom

    def spy(model, n_layers, flag):
        frozen["model"] = model
        return real_freeze(model, n_layers, flag)

    monkeypatch.setattr(ppo, "freeze_bottom", spy)
    cfg = dict(policy="tiny", reward=str(rm_dir), prompts=str(data[0]), batch_size=4)
    cfg.update(max_steps=2, max_new_tokens=8, normalize_samples=4, lr=1e-2)
    ppo.train(ppo.Config(out=tmp_path / "ppo", value_freeze_layers=1, **cfg))
    value = frozen["model"].state_dict()
    start = weights(rm_dir)
    bottom = [n for n in start if ".layers.0." in n or "embed_tokens" in n]
    top = [n for n in start if ".layers.1." in n]
    assert bottom and top
    assert all(torch.equal(value[n], start[n]) for n in bottom)
    assert all(not torch.equal(value[n], start[n]) for n in top)
    with pytest.raises(InputError, match="--value-freeze-layers 5: the model has 2"):
        ppo.train(ppo.Config(out=tmp_path / "ppo2", value_freeze_layers=5, **cfg))


def test_ppo_without_eos_penalty_keeps_the_reward_models_scores(tmp_path, data):
    rm_dir = tiny_reward_model(tmp_path, data, steps=1)
    cfg = dict(policy="tiny", reward=str(rm_dir), prompts=str(data[0]), batch_size=4)
    cfg.update(max_steps=1, max_new_tokens=8, normalize_samples=4)
    out = ppo.train(ppo.Config(out=tmp_path / "ppo", missing_eos_penalty=None, **cfg))
    (row,) = metrics(out)
    assert row["response/eos_share"] == 0.0
    assert row["objective/scores"] != -1.0  # ... and without the penalty, the reward model's


def test_ppo_with_lora_uses_disabled_adapters_as_reference(tmp_path, data):
    rm_dir = tiny_reward_model(tmp_path, data, steps=1)
    out = ppo.train(
        ppo.Config(
            policy="tiny",
            reward=str(rm_dir),
            prompts=str(data[0]),
            out=tmp_path / "ppo",
            batch_size=4,
            max_steps=2,
            max_new_tokens=6,
            lr=1e-2,
            lora=True,
            normalize_samples=0,
        )
    )
    rows = metrics(out)
    assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)
    assert rows[0]["policy/ratio_first"] == 1.0


@pytest.mark.parametrize("argv", [["sft"], ["reward", "train"], ["reward", "eval"], ["ppo"]])
def test_help_works(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text or "--model" in text


def test_missing_data_file_is_a_clear_error(tmp_path, capsys):
    code = main(
        [
            "sft",
            "--model",
            "tiny",
            "--data",
            str(tmp_path / "nope.jsonl"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.jsonl" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "model").exists()


def _torchrun(args: list[str], nproc: int, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        "-m",
        "rlhfkit.cli",
        *args,
    ]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("command", ["sft", "reward"])
def test_one_process_equals_two_processes(tmp_path, data, command):
    demos, pairs = data
    common = [
        "--model",
        "tiny",
        "--batch-size",
        "8",
        "--grad-accum",
        "2",
        "--lr",
        "1e-3",
        "--max-steps",
        "3",
        "--save-every",
        "0",
    ]
    argv = (
        ["sft", "--data", str(demos)]
        if command == "sft"
        else ["reward", "train", "--data", str(pairs)]
    )
    _torchrun([*argv, *common, "--out", str(tmp_path / "one")], 1, tmp_path)
    _torchrun([*argv, *common, "--out", str(tmp_path / "two")], 2, tmp_path)
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-4)
    wa, wb = weights(tmp_path / "one" / "model"), weights(tmp_path / "two" / "model")
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5)


def test_rater_summary_counts_judgments():
    class R:
        def __init__(self, rid):
            self.rater_id = rid

    s = run.rater_summary([R("a"), R("a"), R("b"), R(None)])
    assert s["raters"] == 2 and s["judgments"] == 3 and s["per_rater"] == {"a": 2, "b": 1}


def test_reward_freeze_layers_trains_only_the_top(tmp_path, data):
    out = reward.train(
        reward.Config(
            model="tiny",
            data=str(data[1]),
            out=tmp_path / "rm",
            batch_size=8,
            lr=1e-3,
            max_steps=2,
            freeze_layers=1,
        )
    )
    before = load_reward_model("tiny").model.state_dict()
    after = weights(out / "model")
    for name, tensor in before.items():
        frozen = name.startswith(("model.embed_tokens", "model.layers.0."))
        assert torch.equal(tensor, after[name]) == frozen, name


def test_freezing_more_layers_than_exist_is_a_clear_error(tmp_path, data, capsys):
    code = main(
        [
            "reward",
            "train",
            "--model",
            "tiny",
            "--data",
            str(data[1]),
            "--out",
            str(tmp_path / "rm"),
            "--freeze-layers",
            "99",
            "--max-steps",
            "1",
        ]
    )
    assert code == 2
    assert "--freeze-layers 99" in capsys.readouterr().err


def test_value_model_starts_from_the_reward_model_and_is_trainable(tmp_path, data):
    from rlhfkit.train.rewards import load_reward, value_model_init

    rm_dir = tiny_reward_model(tmp_path, data, steps=1)
    frozen = load_reward(str(rm_dir), tiny_policy().tokenizer)
    value = value_model_init(frozen, None, "tiny")
    assert all(p.requires_grad for p in value.parameters())
    for (name, a), b in zip(
        value.state_dict().items(), frozen.rm.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in frozen.rm.model.parameters())


class _AsciiShare:
    """A reward the tiny byte-level policy can learn fast: the share of reply tokens that are
    ASCII bytes (about half of them at the start). A sign or advantage bug cannot raise it."""

    def __init__(self):
        self.normalization = {"offset": [0.0], "scale": [1.0]}

    def raw(self, prompts, texts, ids, attention_mask):
        return torch.tensor([sum(ord(c) < 128 for c in t) / max(len(t), 1) for t in texts])

    def provenance(self):
        return {"reward": "ascii share (test)"}


@pytest.mark.parametrize("trainer", ["ppo", "rloo"])
def test_rl_trainers_raise_a_learnable_reward(tmp_path, data, monkeypatch, trainer):
    from rlhfkit.train import rloo

    module = {"ppo": ppo, "rloo": rloo}[trainer]
    monkeypatch.setattr(module, "load_reward", lambda ref, tok, device: _AsciiShare())
    cfg = dict(policy="tiny", reward="ascii", prompts=str(data[0]), out=tmp_path / trainer)
    cfg.update(batch_size=16, max_steps=40, max_new_tokens=8, lr=1e-2, kl_coef=0.0)
    cfg.update(normalize_samples=0, temperature=1.0, missing_eos_penalty=None, seed=0)
    if trainer == "rloo":
        cfg["group_size"] = 4
    rows = metrics(module.train(module.Config(**cfg)))
    scores = [r["objective/scores"] for r in rows]
    assert 0.3 < scores[0] < 0.7
    # the last five steps, not the last one: a single step of 16 samples is noisy
    assert sum(scores[-5:]) / 5 > 0.85, [round(s, 2) for s in scores]
