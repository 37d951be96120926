"""KTO on the tiny model: unpaired feedback, balanced weights, the mismatched-pair reference
point, resume, the command and its errors."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.cli import main
from rlhfkit.models import tiny_policy
from rlhfkit.train import kto
from tests.train.tiny_data import WORDS, write_demos, write_pairs


def metrics(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]


def write_feedback(path, n_good=8, n_bad=16, seed=0):
    """Thumbs up on replies that say "good", thumbs down on "bad" (1 : 2, unbalanced)."""
    rng = random.Random(seed)
    rows = [(True, "good " * rng.randint(2, 4)) for _ in range(n_good)]
    rows += [(False, "bad " * rng.randint(1, 3)) for _ in range(n_bad)]
    rng.shuffle(rows)
    with open(path, "w", encoding="utf-8") as fh:
        for label, text in rows:
            prompt = " ".join(rng.choice(WORDS) for _ in range(3))
            fh.write(
                json.dumps(
                    {
                        "prompt": [{"role": "user", "content": prompt}],
                        "completion": [{"role": "assistant", "content": text}],
                        "label": label,
                    }
                )
                + "\n"
            )
    return path


@pytest.fixture
def feedback(tmp_path):
    return write_feedback(tmp_path / "feedback.jsonl")


def config(tmp_path, data, **kw) -> kto.Config:
    values = dict(
        model="tiny",
        data=str(data),
        out=tmp_path / "kto",
        batch_size=8,
        grad_accum=2,
        lr=1e-3,
        max_steps=4,
        save_every=0,
        max_length=48,
    )
    values.update(kw)
    return kto.Config(**values)


def test_kto_learns_with_balanced_weights_and_changes_every_parameter(tmp_path, feedback):
    out = kto.train(config(tmp_path, feedback, eval_fraction=0.25))
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # step 1 runs before any update: policy == reference, z0 = 0, every loss is w * (1 - 1/2)
    prov = json.loads((out / "provenance.json").read_text())
    w_d, w_u = prov["desirable_weight"], prov["undesirable_weight"]
    n_d, n_u = prov["train_desirable"], prov["train_undesirable"]
    assert w_d * n_d / (w_u * n_u) == pytest.approx(1.0)  # balanced as the paper prescribes
    assert rows[0]["train/kl"] == pytest.approx(0.0, abs=1e-5)
    share = rows[0]["train/desirable_share"]
    assert rows[0]["train/loss"] == pytest.approx(0.5 * (share * w_d + (1 - share) * w_u), rel=1e-5)
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    assert rows[-1]["rewards/margins"] > 0
    assert rows[1]["train/kl"] >= 0 and "eval/auc" in rows[-1]
    assert 0.0 <= json.loads((out / "eval.json").read_text())["heldout"]["auc"] <= 1.0
    before = tiny_policy().model.state_dict()
    after = load_file(str(out / "model" / "model.safetensors"))
    saved = [n for n in before if n in after]
    assert len(saved) >= len(before) - 1  # lm_head is tied to the embeddings
    assert not [n for n in saved if torch.equal(before[n], after[n])]


def test_mismatched_partners_are_a_derangement():
    for n in (2, 3, 17):
        partner = kto.mismatched_partners(n, seed=n)
        assert sorted(partner) == list(range(n))
        assert all(partner[i] != i for i in range(n))


def test_reference_point_is_the_kl_of_mismatched_pairs(tmp_path, feedback):
    """z0 logged at step 2 equals mean(log pi - log ref) of the step's mismatched sequences,
    recomputed here by hand from the checkpointed policy."""
    out = kto.train(config(tmp_path, feedback, max_steps=2, save_every=1, grad_accum=1))
    ref = torch.load(out / kto.REFERENCE_CACHE)
    examples = kto.read_feedback(str(feedback))
    policy = tiny_policy()
    state = load_file(str(out / "checkpoints" / "step-1" / "model.safetensors"))
    policy.model.load_state_dict({k.removeprefix("lm."): v for k, v in state.items()}, strict=False)
    matched, mismatched = kto.encode_feedback(policy.tokenizer, examples, 48, 0)
    from rlhfkit.train.base import GlobalBatchSampler, SelectiveLM, derive_batches

    lengths = [len(a) + len(b) for (a, _), (b, _) in zip(matched, mismatched, strict=True)]
    sampler = GlobalBatchSampler(lengths, derive_batches(8, 1, 1), 0)  # as kto.train builds it
    items = sampler.global_batch(1)
    with torch.no_grad():
        logps = kto._logps(
            SelectiveLM(policy.model),
            [mismatched[i] for i in items],
            policy.tokenizer.pad_token_id,
            torch.device("cpu"),
        )
    expected = max((logps - ref["mismatched"][items]).mean().item(), 0.0)
    assert expected > 0  # the policy has moved: a real check, not 0 == 0
    assert metrics(out)[1]["train/kl"] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_preference_pairs_need_split_pairs(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=8)
    argv = [
        "kto",
        "--model",
        "tiny",
        "--data",
        str(pairs),
        "--batch-size",
        "4",
        "--max-steps",
        "1",
        "--max-length",
        "48",
    ]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "--split-pairs" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main([*argv, "--out", str(tmp_path / "b"), "--split-pairs"]) == 0
    prov = json.loads((tmp_path / "b" / "provenance.json").read_text())
    assert prov["train_desirable"] == prov["train_undesirable"] == 8
    assert prov["desirable_weight"] == prov["undesirable_weight"] == 1.0


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, feedback, monkeypatch):
    whole = kto.train(config(tmp_path, feedback, out=tmp_path / "whole"))

    class Crash(Exception):
        pass

    real_save = kto.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Crash

    monkeypatch.setattr(kto, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        kto.train(config(tmp_path, feedback, out=tmp_path / "crashed", save_every=2))
    monkeypatch.setattr(kto, "save_checkpoint", real_save)
    resumed = kto.train(
        config(tmp_path, feedback, out=tmp_path / "crashed", save_every=2, resume=True)
    )
    a, b = metrics(whole), metrics(resumed)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        assert ra["train/loss"] == pytest.approx(rb["train/loss"], rel=1e-5)
        assert ra["train/kl"] == pytest.approx(rb["train/kl"], rel=1e-4, abs=1e-7)
    wa = load_file(str(whole / "model" / "model.safetensors"))
    wb = load_file(str(resumed / "model" / "model.safetensors"))
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6)


def test_cli_help_and_tiny_run(tmp_path, feedback, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["kto", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--split-pairs" in text and "--desirable-weight" in text
    code = main(
        [
            "kto",
            "--model",
            "tiny",
            "--data",
            str(feedback),
            "--out",
            str(tmp_path / "cli"),
            "--batch-size",
            "4",
            "--max-steps",
            "1",
            "--max-length",
            "32",
            "--lora",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["run"] == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "model" / "adapter_config.json").exists()
    assert not math.isnan(metrics(tmp_path / "cli")[0]["train/loss"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "MISSING"], "nope.jsonl"),
        (["--data", "DEMOS"], "no label"),
        (["--data", "ONECLASS"], "both desirable and undesirable"),
        (["--beta", "0"], "--beta"),
        (["--weight-ratio", "2"], "--weight-ratio"),
        (["--desirable-weight", "-1"], "--desirable-weight"),
        (["--batch-size", "64"], "--batch-size"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, feedback, capsys, extra, message):
    files = {
        "MISSING": str(tmp_path / "nope.jsonl"),
        "DEMOS": str(write_demos(tmp_path / "demos.jsonl", n=8)),
        "ONECLASS": str(write_feedback(tmp_path / "good.jsonl", n_good=8, n_bad=0)),
    }
    extra = [files.get(x, x) for x in extra]
    argv = [
        "kto",
        "--model",
        "tiny",
        "--data",
        str(feedback),
        "--out",
        str(tmp_path / "bad"),
        *extra,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "bad" / "model").exists()
