"""The report on runs the tiny trainers really wrote: SFT, a reward model trained on the store's
own export, and PPO from both; the store project is found from the export's sources."""

from __future__ import annotations

import json

from rlhfkit.cli import main
from rlhfkit.store import ProjectSettings, create_project, make_engine
from rlhfkit.store.export import export_preferences
from rlhfkit.train import ppo, reward, sft
from tests.report.fake_runs import make_store
from tests.train.tiny_data import write_demos


def test_report_on_tiny_trainer_runs_and_a_store_export(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/store.db"
    pid = make_store(url)
    engine = make_engine(url)
    create_project(engine, ProjectSettings(name="a later round"))  # two projects in the store
    n_pairs = export_preferences(engine, pid, tmp_path / "prefs.jsonl")
    engine.dispose()
    demos = write_demos(tmp_path / "demos.jsonl", n=16)
    s = sft.train(
        sft.Config(model="tiny", data=str(demos), out="runs/sft", batch_size=8, max_steps=2)
    )
    rm = reward.train(
        reward.Config(
            model="tiny",
            data="prefs.jsonl",
            out="runs/rm",
            batch_size=8,
            max_steps=2,
            eval_fraction=0.25,
        )
    )
    ppo.train(
        ppo.Config(
            policy=str(s / "model"),
            reward=str(rm / "model"),
            prompts=str(demos),
            out="runs/ppo",
            batch_size=4,
            num_minibatches=2,
            ppo_epochs=1,
            max_steps=2,
            max_new_tokens=6,
            normalize_samples=4,
            eval_prompts=str(demos),
            eval_samples=3,
        )
    )
    capsys.readouterr()
    assert (
        main(["report", "runs/ppo", "--json", "--out", "report.html", "--database-url", url]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["runs"] == ["runs/ppo", "runs/sft", "runs/rm"]
    sections = {s["key"]: s for s in data["sections"]}
    facts = {k: {f["label"]: f for f in s["facts"]} for k, s in sections.items()}
    assert facts["overview"]["base model"]["value"] == "tiny"
    assert facts["raters"]["pairs trained on"]["value"] == n_pairs
    assert facts["raters"]["raters who judged"]["value"] == 4  # from the store, project detected
    assert any(f"store project {pid} found" in n for n in sections["raters"]["notes"])
    assert facts["reward_model"]["held-out pairs"]["source"] == "runs/rm/eval.json#heldout.n"
    assert len(sections["samples"]["samples"]) == 3
    plotted = {p["series"][0]["source"] for p in sections["training"]["plots"]}
    assert "runs/ppo/metrics.jsonl#objective/kl" in plotted
    html = (tmp_path / "report.html").read_text()
    assert 'href="runs/rm/eval.json#heldout.accuracy"' in html


def test_report_help(capsys):
    try:
        main(["report", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert "--database-url" in out and "--json" in out and "RUN" in out
