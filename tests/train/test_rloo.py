"""RLOO on the tiny model against a tiny reward model: the update moves every parameter, starts
at zero KL, does not depend on how the batch is split, resumes exactly; the command works and
rejects bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.cli import main
from rlhfkit.models import tiny_policy
from rlhfkit.models.heads import load_reward_model
from rlhfkit.train import rloo
from tests.train.tiny_data import write_demos, write_pairs


def metrics(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]


def tiny_reward_dir(path):
    """A saved tiny reward model (random head, the tiny policy's tokenizer)."""
    rm = load_reward_model("tiny", seed=1)
    rm.model.save_pretrained(path)
    rm.tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def setup(tmp_path):
    return tiny_reward_dir(tmp_path / "rm"), write_demos(tmp_path / "prompts.jsonl", n=16)


def config(tmp_path, setup, **kw) -> rloo.Config:
    rm, prompts = setup
    values = dict(
        policy="tiny",
        reward=str(rm),
        prompts=str(prompts),
        out=tmp_path / "rloo",
        batch_size=8,
        group_size=4,
        max_steps=2,
        max_new_tokens=8,
        lr=1e-2,
        normalize_samples=4,
        missing_eos_penalty=None,
        temperature=1.0,
    )
    values.update(kw)
    return rloo.Config(**values)


def test_group_documents_share_one_prompt_in_generation_order():
    """A group's k samples follow one copy of its prompt, in the rows' order (packed forwards
    equal full passes: tests/models/test_packing.py)."""
    from rlhfkit.models.chat import left_pad, right_pad
    from rlhfkit.models.generation import Generation
    from rlhfkit.train.common import rollout_documents

    p_ids, p_mask = left_pad([[5, 6, 7], [5, 6, 7], [9], [9]], 0)
    r_ids, r_mask = right_pad([[20, 2], [21, 22, 2], [23], [24, 2]], 0)
    gen = Generation(p_ids, p_mask, r_ids, r_mask.bool(), torch.ones(4, dtype=torch.bool), [])
    docs = rollout_documents(gen)
    assert [(d.prefix, d.continuations) for d in docs] == [
        ([5, 6, 7], [[20, 2]]),
        ([5, 6, 7], [[21, 22, 2]]),
        ([9], [[23]]),
        ([9], [[24, 2]]),
    ]
    groups = rollout_documents(gen, group_size=2)  # RLOO: one document per group of k = 2
    assert [(d.prefix, d.continuations) for d in groups] == [
        ([5, 6, 7], [[20, 2], [21, 22, 2]]),
        ([9], [[23], [24, 2]]),
    ]


def test_rloo_starts_at_zero_kl_and_changes_every_parameter(tmp_path, setup):
    out = rloo.train(config(tmp_path, setup, eval_prompts=str(setup[1]), eval_samples=4))
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for key in (
        "objective/scores",
        "objective/kl",
        "objective/rlhf_reward",
        "loss/policy",
        "policy/entropy",
        "response/length",
        "response/eos_share",
    ):
        assert key in rows[0]
    assert rows[0]["objective/kl"] == 0.0  # policy == reference before the first update
    assert rows[1]["objective/kl"] != 0.0
    assert rows[0]["policy/advantage_abs"] > 0
    # the normalisation was fitted on the starting policy's samples and recorded
    assert json.loads((out / "provenance.json").read_text())["reward_normalization"]["offset"]
    assert {"before", "after"} <= set(json.loads((out / "eval.json").read_text()))
    before = tiny_policy().model.state_dict()
    after = load_file(str(out / "model" / "model.safetensors"))
    saved = [n for n in before if n in after]
    assert len(saved) >= len(before) - 1  # lm_head is tied to the embeddings
    assert not [n for n in saved if torch.equal(before[n], after[n])]


def test_rloo_trains_against_a_personality_reward(tmp_path, setup):
    out = rloo.train(config(tmp_path, setup, reward="personality:concise", max_steps=1))
    (row,) = metrics(out)
    assert row["objective/kl"] == 0.0 and row["policy/advantage_abs"] > 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert "concise" in json.dumps(provenance["inputs"]["reward"])


def test_gradient_accumulation_gives_the_same_update(tmp_path, setup):
    """Loss normalised by the global sample count: 8 samples in one micro-batch or in two
    (whole groups each) give the same weights."""
    one = rloo.train(config(tmp_path, setup, out=tmp_path / "one", grad_accum=1))
    two = rloo.train(config(tmp_path, setup, out=tmp_path / "two", grad_accum=2))
    for a, b in zip(metrics(one), metrics(two), strict=True):
        assert a["objective/scores"] == pytest.approx(b["objective/scores"], rel=1e-5)
        assert a["loss/policy"] == pytest.approx(b["loss/policy"], rel=1e-3, abs=1e-5)
    wa = load_file(str(one / "model" / "model.safetensors"))
    wb = load_file(str(two / "model" / "model.safetensors"))
    for name in wa:
        # Adam turns float-rounding differences of near-zero gradients into visible ones; 1e-4
        # is 1 % of one step at lr 1e-2, far below what a wrong normalisation would give
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-3, atol=1e-4)


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, setup, monkeypatch):
    whole = rloo.train(config(tmp_path, setup, out=tmp_path / "whole", max_steps=3))

    class Crash(Exception):
        pass

    real_save = rloo.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Crash

    monkeypatch.setattr(rloo, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        rloo.train(config(tmp_path, setup, out=tmp_path / "crashed", max_steps=3, save_every=2))
    monkeypatch.setattr(rloo, "save_checkpoint", real_save)
    resumed = rloo.train(
        config(tmp_path, setup, out=tmp_path / "crashed", max_steps=3, save_every=2, resume=True)
    )
    a, b = metrics(whole), metrics(resumed)
    assert [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        assert ra["objective/scores"] == pytest.approx(rb["objective/scores"], rel=1e-5)
        assert ra["objective/kl"] == pytest.approx(rb["objective/kl"], rel=1e-4, abs=1e-6)
    wa = load_file(str(whole / "model" / "model.safetensors"))
    wb = load_file(str(resumed / "model" / "model.safetensors"))
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6)


def test_lora_reference_is_the_policy_with_adapters_disabled(tmp_path, setup):
    out = rloo.train(config(tmp_path, setup, lora=True, max_steps=2, lr=5e-2))
    rows = metrics(out)
    assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)
    assert rows[1]["objective/kl"] != 0.0
    assert (out / "model" / "model.safetensors").exists()  # merged: a plain model directory


def test_cli_help_and_tiny_run(tmp_path, setup, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["rloo", "--help"])
    assert exc.value.code == 0
    assert "--group-size" in capsys.readouterr().out
    rm, prompts = setup
    code = main(
        [
            "rloo",
            "--policy",
            "tiny",
            "--reward",
            str(rm),
            "--prompts",
            str(prompts),
            "--out",
            str(tmp_path / "cli"),
            "--batch-size",
            "4",
            "--group-size",
            "2",
            "--max-steps",
            "1",
            "--max-new-tokens",
            "4",
            "--normalize-samples",
            "0",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["run"] == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "model" / "config.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompts", "MISSING"], "nope.jsonl"),
        (["--reward", "MISSING"], "nope.jsonl"),
        (["--reward", "PAIRS"], "pairs.jsonl"),
        (["--group-size", "1"], "--group-size"),
        (["--batch-size", "6", "--group-size", "4"], "--group-size"),
        (["--batch-size", "8", "--grad-accum", "4", "--group-size", "4"], "--group-size"),
        (["--batch-size", "64", "--group-size", "2"], "fewer than the 32"),
        (["--temperature", "0"], "--temperature"),
        (["--kl-coef", "-1"], "--kl-coef"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, setup, capsys, extra, message):
    rm, prompts = setup
    files = {
        "MISSING": str(tmp_path / "nope.jsonl"),
        "PAIRS": str(write_pairs(tmp_path / "pairs.jsonl", n=4)),
    }
    extra = [files.get(x, x) for x in extra]
    argv = [
        "rloo",
        "--policy",
        "tiny",
        "--reward",
        str(rm),
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "bad"),
        "--max-new-tokens",
        "4",
        *extra,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "bad" / "model").exists()
