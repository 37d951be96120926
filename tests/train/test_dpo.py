"""DPO on the tiny model: it learns, its cached reference equals a fresh computation, it resumes
exactly, and the command rejects bad input with exit 2."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.cli import main
from rlhfkit.data import read_preferences
from rlhfkit.models import tiny_policy
from rlhfkit.train import dpo
from rlhfkit.train.reward import encode_pair
from tests.train.tiny_data import write_demos, write_pairs


def metrics(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]


@pytest.fixture
def pairs(tmp_path):
    return write_pairs(tmp_path / "pairs.jsonl", n=24)


def config(tmp_path, pairs, **kw) -> dpo.Config:
    values = dict(
        model="tiny",
        data=str(pairs),
        out=tmp_path / "dpo",
        batch_size=8,
        grad_accum=2,
        lr=1e-3,
        max_steps=4,
        save_every=0,
        max_length=64,
    )
    values.update(kw)
    return dpo.Config(**values)


def test_dpo_learns_logs_rewards_and_changes_every_parameter(tmp_path, pairs):
    out = dpo.train(config(tmp_path, pairs, eval_fraction=0.25, eval_every=2))
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # the first step runs before any update: policy == reference, so the loss is log 2 exactly
    assert rows[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert rows[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    for key in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
    ):
        assert key in rows[-1]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    assert rows[-1]["rewards/margins"] > 0
    assert "eval/accuracy" in rows[1] and "eval/accuracy" not in rows[0]
    heldout = json.loads((out / "eval.json").read_text())["heldout"]
    assert heldout["pairs"] == 6 and heldout["accuracy"] == rows[-1]["eval/accuracy"]
    before = tiny_policy().model.state_dict()
    after = load_file(str(out / "model" / "model.safetensors"))
    saved = [n for n in before if n in after]  # lm_head is tied to the embeddings, saved once
    assert len(saved) >= len(before) - 1
    unchanged = [n for n in saved if torch.equal(before[n], after[n])]
    assert not unchanged


def test_rpo_adds_the_chosen_likelihood_and_raises_it(tmp_path, pairs):
    """RPO: step 1's loss is log 2 plus alpha times the chosen replies' per-token NLL, and the
    term makes training raise the chosen replies' likelihood more than DPO alone does."""
    plain = metrics(dpo.train(config(tmp_path, pairs, out=tmp_path / "plain")))
    rpo = metrics(dpo.train(config(tmp_path, pairs, out=tmp_path / "rpo", rpo_alpha=2.0)))
    first = rpo[0]
    assert first["train/nll_chosen"] > 0
    assert first["train/nll_chosen"] == pytest.approx(plain[0]["train/nll_chosen"], rel=1e-5)
    expected = math.log(2) + 2.0 * first["train/nll_chosen"]
    assert first["train/loss"] == pytest.approx(expected, abs=1e-5)
    assert rpo[-1]["train/nll_chosen"] < plain[-1]["train/nll_chosen"]
    assert rpo[-1]["logps/chosen"] > plain[-1]["logps/chosen"]


def fresh_logps(model, tok, prompt_ids, response_ids) -> float:
    """Summed response log-prob of one unpadded sequence, straight from the HF model."""
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1]  # (seq-1, vocab)
    logp = torch.log_softmax(logits.double(), -1).gather(-1, ids[0, 1:, None])[:, 0]
    return logp[len(prompt_ids) - 1 :].sum().item()


def test_cached_reference_logps_equal_a_fresh_computation(tmp_path, pairs):
    out = dpo.train(config(tmp_path, pairs, max_steps=1))
    cached = torch.load(out / dpo.REFERENCE_CACHE)["train"]
    policy = tiny_policy()
    tok = policy.tokenizer
    records = read_preferences(pairs)
    assert cached.shape == (len(records), 2)
    for i, pair in enumerate(records[:8]):
        enc = encode_pair(tok, pair, 64, [])
        expected = [
            fresh_logps(policy.model, tok, enc.prompt, enc.chosen),
            fresh_logps(policy.model, tok, enc.prompt, enc.rejected),
        ]
        assert cached[i].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-3)


def test_ipo_starts_at_its_hand_value_and_lora_saves_adapters(tmp_path, pairs):
    out = dpo.train(
        config(tmp_path, pairs, loss_type="ipo", beta=0.1, lora=True, max_steps=2, lr=1e-2)
    )
    rows = metrics(out)
    assert rows[0]["train/loss"] == pytest.approx((0 - 1 / (2 * 0.1)) ** 2, rel=1e-5)
    assert rows[1]["train/loss"] != rows[0]["train/loss"]
    assert (out / "model" / "adapter_config.json").exists()


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, pairs, monkeypatch):
    whole = dpo.train(config(tmp_path, pairs, out=tmp_path / "whole"))

    class Crash(Exception):
        pass

    real_save = dpo.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Crash

    monkeypatch.setattr(dpo, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        dpo.train(config(tmp_path, pairs, out=tmp_path / "crashed", save_every=2))
    monkeypatch.setattr(dpo, "save_checkpoint", real_save)
    resumed = dpo.train(
        config(tmp_path, pairs, out=tmp_path / "crashed", save_every=2, resume=True)
    )
    a, b = metrics(whole), metrics(resumed)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        assert ra["train/loss"] == pytest.approx(rb["train/loss"], rel=1e-5)
        assert ra["rewards/margins"] == pytest.approx(rb["rewards/margins"], rel=1e-4, abs=1e-6)
    wa = load_file(str(whole / "model" / "model.safetensors"))
    wb = load_file(str(resumed / "model" / "model.safetensors"))
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6)


def test_cli_help_and_tiny_run(tmp_path, pairs, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["dpo", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--loss-type" in text and "--label-smoothing" in text and "--eval-fraction" in text
    code = main(
        [
            "dpo",
            "--model",
            "tiny",
            "--data",
            str(pairs),
            "--out",
            str(tmp_path / "cli"),
            "--batch-size",
            "4",
            "--max-steps",
            "1",
            "--max-length",
            "48",
            "--label-smoothing",
            "0.1",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["run"] == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "model" / "config.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "MISSING"], "nope.jsonl"),
        (["--data", "DEMOS"], "expected preferences"),
        (["--beta", "-1"], "--beta"),
        (["--beta", "nan"], "--beta"),
        (["--label-smoothing", "0.7"], "--label-smoothing"),
        (["--rpo-alpha", "-1"], "--rpo-alpha"),
        (["--rpo-alpha", "nan"], "--rpo-alpha"),
        (["--rpo-alpha", "inf"], "--rpo-alpha"),
        (["--loss-type", "hinge", "--data", "PAIRS"], "loss_type"),
        (["--loss-type", "ipo", "--label-smoothing", "0.1"], "IPO"),
        (["--batch-size", "6", "--grad-accum", "4"], "--grad-accum"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, pairs, capsys, extra, message):
    files = {
        "MISSING": str(tmp_path / "nope.jsonl"),
        "PAIRS": str(pairs),
        "DEMOS": str(write_demos(tmp_path / "demos.jsonl")),
    }
    extra = [files.get(x, x) for x in extra]
    argv = ["dpo", "--model", "tiny", "--data", str(pairs), "--out", str(tmp_path / "bad"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()  # nothing half-written
