"""`rlhfkit demo --fast`: every stage of the loop runs end to end on the tiny model."""

import json

from rlhfkit.cli import main
from tests.conftest import shared_file


def test_fast_demo_runs_every_stage_and_ends_with_a_json_line(tmp_path, capsys):
    shared_file("oasst/en_100_message.jsonl")
    shared_file("self-instruct/seed_tasks.jsonl")
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    for key in ("gold_reward_sft", "gold_reward_final", "kl", "report"):
        assert key in summary
    assert summary["judgments"] > 0
    report = (out / "report.html").read_text()
    assert "how" in report.lower() and "<script" not in report
    for run in ("sft", "reward", "ppo"):
        assert (out / run / "provenance.json").exists()
    assert json.loads((out / "ppo" / "gold.json").read_text())["final"]["gold"]["n"] == 8


def test_demo_without_data_is_a_clear_error(tmp_path, capsys):
    code = main(["demo", "--fast", "--out", str(tmp_path / "d"), "--data-dir", str(tmp_path)])
    assert code == 2
    assert "en_100_message.jsonl" in capsys.readouterr().err
