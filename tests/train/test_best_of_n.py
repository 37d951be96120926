"""Best-of-n on the tiny model: the best-of-k curve, the demonstrations file, resume, the
command and its errors."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.data import read_examples
from rlhfkit.train import best_of_n
from tests.train.test_rloo import tiny_reward_dir
from tests.train.tiny_data import write_demos, write_pairs


@pytest.fixture
def setup(tmp_path):
    return tiny_reward_dir(tmp_path / "rm"), write_demos(tmp_path / "prompts.jsonl", n=10)


def config(tmp_path, setup, **kw) -> best_of_n.Config:
    rm, prompts = setup
    values = dict(
        policy="tiny",
        reward=str(rm),
        prompts=str(prompts),
        out=tmp_path / "bon",
        num_samples=4,
        batch_size=4,
        max_new_tokens=6,
        temperature=1.0,
    )
    values.update(kw)
    return best_of_n.Config(**values)


def samples(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / best_of_n.SAMPLES).read_text().splitlines()]


def test_best_of_k_curve_equals_brute_force_over_subsets():
    rewards = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    curve = best_of_n.best_of_k_curve(rewards)
    for k in range(1, 6):
        brute = [
            sum(max(row[list(s)]).item() for s in itertools.combinations(range(5), k))
            / len(list(itertools.combinations(range(5), k)))
            for row in rewards
        ]
        assert curve[k - 1] == pytest.approx(sum(brute) / 3, rel=1e-9)


def test_report_demonstrations_and_samples_agree(tmp_path, setup):
    report = best_of_n.rejection_sample(config(tmp_path, setup))
    out = tmp_path / "bon"
    rows = samples(out)
    assert [r["index"] for r in rows] == list(range(10))
    rewards = torch.tensor([r["rewards"] for r in rows])  # (10, 4)
    assert report["prompts"] == 10 and report["n"] == 4 and len(report["best_of_k"]) == 4
    # best-of-1 is the mean sampled reward, best-of-n the mean of each prompt's best
    assert report["best_of_k"][0] == pytest.approx(rewards.mean().item(), abs=1e-5)
    assert report["best_of_k"][-1] == pytest.approx(rewards.max(-1).values.mean().item(), abs=1e-5)
    assert all(b >= a for a, b in itertools.pairwise(report["best_of_k"]))
    assert report["gain"][0] == 0 and report["gain"][-1] > 0  # random samples differ in reward
    assert json.loads((out / best_of_n.REPORT).read_text()) == report
    demos = read_examples(out / best_of_n.DEMONSTRATIONS)
    assert len(demos) == 10
    for demo, row in zip(demos, rows, strict=True):
        best = max(range(4), key=row["rewards"].__getitem__)
        assert demo.completion == row["texts"][best]
        assert demo.meta["reward"] == pytest.approx(max(row["rewards"]))
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]  # 10 prompts in batches of 4
    assert json.loads((out / "provenance.json").read_text())["kind"] == "best-of-n"


def test_missing_eos_penalty_replaces_scores_of_unfinished_replies(tmp_path, setup):
    best_of_n.rejection_sample(config(tmp_path, setup, missing_eos_penalty=-7.0, max_new_tokens=2))
    for row in samples(tmp_path / "bon"):
        for reward, eos in zip(row["rewards"], row["has_eos"], strict=True):
            assert (reward == -7.0) == (not eos)


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, setup, monkeypatch):
    whole = best_of_n.rejection_sample(config(tmp_path, setup, out=tmp_path / "whole"))

    class Crash(Exception):
        pass

    real_generate, calls = best_of_n.generate, []

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Crash
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(best_of_n, "generate", crash_on_third)
    with pytest.raises(Crash):
        best_of_n.rejection_sample(config(tmp_path, setup, out=tmp_path / "crashed"))
    assert len(samples(tmp_path / "crashed")) == 8  # two complete batches were kept
    # a half-written line (killed mid-write) is dropped on resume
    with open(tmp_path / "crashed" / best_of_n.SAMPLES, "a") as fh:
        fh.write('{"index": 8, "rew')
    monkeypatch.setattr(best_of_n, "generate", real_generate)
    resumed = best_of_n.rejection_sample(
        config(tmp_path, setup, out=tmp_path / "crashed", resume=True)
    )
    assert resumed["best_of_k"] == whole["best_of_k"]
    assert samples(tmp_path / "crashed") == samples(tmp_path / "whole")


def test_cli_help_and_tiny_run_print_the_report(tmp_path, setup, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["best-of-n", "--help"])
    assert exc.value.code == 0
    assert "--num-samples" in capsys.readouterr().out
    rm, prompts = setup
    code = main(
        [
            "best-of-n",
            "--policy",
            "tiny",
            "--reward",
            str(rm),
            "--prompts",
            str(prompts),
            "--out",
            str(tmp_path / "cli"),
            "--num-samples",
            "3",
            "--max-prompts",
            "2",
            "--max-new-tokens",
            "4",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prompts"] == 2 and len(report["best_of_k"]) == 3
    assert report["run"] == str(tmp_path / "cli")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompts", "MISSING"], "nope.jsonl"),
        (["--reward", "PAIRS"], "pairs.jsonl"),
        (["--num-samples", "0"], "--num-samples"),
        (["--temperature", "0"], "--temperature"),
        (["--top-p", "1.5"], "--top-p"),
        (["--num-samples", "two"], "field num_samples"),
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
        "best-of-n",
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
    assert not (tmp_path / "bad" / best_of_n.DEMONSTRATIONS).exists()
