"""The transparency report: every section renders from hand-written runs and a small store,
numbers link to their source, the page is offline and escaped, missing pieces degrade, --json
round-trips, and garbage input exits 2 with PATH:LINE."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from rlhfkit.cli import main
from rlhfkit.errors import InputError
from rlhfkit.report import ReportData, build_report, render_html, write_report
from rlhfkit.report.data import MAX_TEXT
from tests.report.fake_runs import SCRIPT, make_store, write_chain, write_run


@pytest.fixture
def chain(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_chain(tmp_path)


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path}/store.db"
    return url, make_store(url)


def facts(data: ReportData, key: str) -> dict:
    return {f.label: f for f in data.section(key).facts}


def test_ppo_run_alone_finds_the_chain_and_every_section_renders(chain, store, tmp_path):
    url, pid = store
    data = build_report(["runs/ppo"], database_url=url, project=str(pid))
    assert data.runs == ["runs/ppo", "runs/sft", "runs/rm"]
    over = facts(data, "overview")
    assert over["base model"].value == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert over["base model"].source == "runs/sft/provenance.json#inputs.model"
    demo = facts(data, "demonstrations")
    assert demo["demonstrations"].value == 12 and len(demo["sha256"].value) == 64
    rm = facts(data, "reward_model")
    assert rm["held-out accuracy"].value == 0.7123
    assert rm["held-out accuracy"].source == "runs/rm/eval.json#heldout.accuracy"
    assert rm["held-out calibration error (ECE)"].value == 0.0456
    raters = facts(data, "raters")
    assert raters["raters who judged"].value == 4
    assert raters["raters who judged"].source == "store:judgments"
    # every judgment pays 20 cents for 30 s on task: $24.00 an hour
    n = raters["judgments"].value
    assert n >= 24 and raters["total paid"].value == 20 * n
    assert raters["effective hourly rate (all pay / all time)"].value == pytest.approx(2400)
    assert raters["median time per task"].value == 30
    assert "gold accuracy (pool)" in raters and "percent agreement" in raters
    groups = next(t for t in data.section("raters").tables if t.title.startswith("Self-described"))
    assert {row[1] for row in groups.rows} == {"IN", "US", "undisclosed"}
    bias = facts(data, "bias")
    assert bias["presentation order recorded"].value == "yes"  # the store records shown order
    coef = data.section("bias").tables[0]
    assert [row[0] for row in coef.rows] == ["position", "length"]
    training = data.section("training")
    assert {p.series[0].source for p in training.plots} >= {
        "runs/ppo/metrics.jsonl#objective/kl",
        "runs/ppo/metrics.jsonl#objective/scores",
        "runs/ppo/metrics.jsonl#response/length",
        "runs/rm/metrics.jsonl#train/accuracy",
    }
    kl = next(t for t in training.tables if t.title.startswith("ppo"))
    kl_row = next(r for r in kl.rows if r[0] == "objective/kl")
    assert kl_row[2].value == pytest.approx(0.05 * 81)
    samples = data.section("samples")
    assert len(samples.samples) == 3 and samples.samples[0].before == "plain answer"
    change = next(r for r in samples.tables[0].rows if r[0] == "reward")
    assert change[3].value == pytest.approx(0.8765 - 0.0123)

    out = write_report(data, tmp_path / "out" / "report.html")
    html = out.read_text()
    for s in data.sections:
        assert f'<section id="{s.key}">' in html
    # numbers appear with links to their file (relative to the page) and key, or store table
    assert 'href="../runs/rm/eval.json#heldout.accuracy"' in html
    assert ">71.2 %</a>" in html
    assert 'href="../runs/ppo/eval.json#after.reward"' in html
    assert 'href="#store-ledger"' in html and 'id="store-ledger"' in html
    assert ">$24.00/h</a>" in html
    assert html.count("data:image/png;base64,") == len([p for s in data.sections for p in s.plots])


def test_page_is_offline_and_escapes_text_from_runs_and_store(chain, store, tmp_path):
    url, pid = store
    html = render_html(build_report(["runs/ppo"], database_url=url), tmp_path)
    links = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html, flags=re.I)
    assert links and not [x for x in links if re.match(r"(https?:)?//", x, flags=re.I)]
    assert SCRIPT not in html
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html  # reply and project name
    assert html.count("&lt;script&gt;") >= 2
    # a 25,000-character reply is cut
    assert "word " * 5000 not in html and ("word " * 150) in html


def test_long_texts_are_size_limited_in_the_data(chain):
    data = build_report(["runs/ppo"])
    long = data.section("samples").samples[1].after
    assert len(long) == MAX_TEXT and long.endswith("…")


def test_judged_file_gives_agreement_and_bias_without_a_store(chain):
    data = build_report(["runs/ppo"])
    raters = facts(data, "raters")
    assert raters["raters named in the data"].value == 3
    assert raters["percent agreement"].source.endswith("pairs.jsonl#agreement")
    assert 0.5 < raters["percent agreement"].value < 0.9
    bias = facts(data, "bias")
    assert bias["presentation order recorded"].value == "no"
    length = data.section("bias").tables[0].rows[0]
    assert length[0] == "length" and length[1].value > 0  # the planted raters like length


def test_relative_records_are_found_from_another_directory(chain, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data = build_report([chain["ppo"]])
    assert data.runs == ["../runs/ppo", "../runs/sft", "../runs/rm"]
    assert facts(data, "raters")["percent agreement"].source == "../pairs.jsonl#agreement"
    html = render_html(data, elsewhere)
    assert 'href="../runs/rm/eval.json#heldout.accuracy"' in html


def test_changed_training_file_is_not_used(chain):
    with open(chain["pairs"], "a") as fh:
        fh.write("\n")
    data = build_report(["runs/ppo"])
    assert any("changed since training" in n for n in data.section("raters").notes)
    assert "percent agreement" not in facts(data, "raters")


def test_missing_pieces_degrade_to_notes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = write_run(
        tmp_path / "runs" / "ppo",
        "ppo",
        {"policy": {"path": "gone/model", "parent_run": "gone"}, "reward": {"name": "x"}},
        [],
    )
    data = build_report([run])
    notes = {s.key: " ".join(s.notes) for s in data.sections}
    assert "gone" in notes["overview"] and "was not found" in notes["overview"]
    for key in ("demonstrations", "raters", "reward_model", "personality", "refusals", "samples"):
        assert "not recorded" in notes[key], key
    assert "not recorded" in notes["training"]
    html = render_html(data, tmp_path)
    assert html.count('class="note"') >= 7


def test_fields_of_the_wrong_type_are_left_out_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(
        tmp_path / "sft",
        "sft",
        {"data": {"path": 5}},
        [{"step": "x", "train/loss": 1}],
        extra={"raters": 5, "examples": {"a": 1}},
    )
    write_run(
        tmp_path / "rm",
        "reward",
        {"model": {"parent_run": "sft"}, "data": {"sha256": 1}},
        [{"train/accuracy": "high"}, {"train/accuracy": True}],
        extra={"heads": "preference", "raters": ["x"]},
        evaluation={"heldout": "x", "eval_data": {"accuracy": "n/a", "n": None}},
    )
    write_run(
        tmp_path / "ppo",
        "ppo",
        {"policy": {"parent_run": "sft"}, "reward": {"parent_run": "rm"}},
        [{"objective/kl": None}, {"objective/kl": float("nan")}],
        extra={"reward_normalization": {"offset": 1.0, "scale": "big"}, "personality": 3},
        evaluation={"before": [], "after": {"samples": "none", "reward": "?"}},
    )
    data = build_report(["ppo"])
    assert data.runs == ["ppo", "sft", "rm"]
    assert facts(data, "reward_model")["reward offset used by ppo"].value == 1.0
    assert "could not be read" in " ".join(data.section("personality").notes)
    render_html(data, tmp_path)
    json.dumps(data.to_dict(), allow_nan=False)


def test_personality_refusals_tradeoff_and_propagation_when_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = write_chain(tmp_path, ppo_config={"spec": "concise", "seed": 0})
    ev = json.loads((paths["ppo"] / "eval.json").read_text())
    ev["after"]["refusal_rate_harmful"] = 0.8
    ev["after"]["refusal_rate_safe"] = 0.1
    (paths["ppo"] / "eval.json").write_text(json.dumps(ev))
    (paths["ppo"] / "tradeoff.json").write_text(
        json.dumps({"chosen_point": {"harmless_weight": 0.5, "helpfulness": 0.3}})
    )
    est = {"estimate": 0.7, "ci_low": 0.5, "ci_high": 0.9, "n": 60, "significant": True}
    audit = {"attributes": ["length"], "runs": [{"run": "runs/ppo", "stages": {
        "raters": {"length": est}, "reward_model": {"length": {**est, "estimate": 0.4}},
    }}]}  # fmt: skip
    (paths["ppo"] / "propagation.json").write_text(json.dumps(audit))
    data = build_report(["runs/ppo"])
    pers = facts(data, "personality")
    assert pers["personality"].value == "concise"
    assert pers["personality"].source == "runs/ppo/config.yaml#spec"
    weights = data.section("personality").tables[0]
    assert ["concision", 1.0] in weights.rows
    ref = data.section("refusals")
    cells = {r[0]: r[1] for t in ref.tables for r in t.rows}
    assert cells["after.refusal_rate_harmful"].value == 0.8
    assert cells["after.refusal_rate_harmful"].source == (
        "runs/ppo/eval.json#after.refusal_rate_harmful"
    )
    assert cells["chosen_point.harmless_weight"].source == (
        "runs/ppo/tradeoff.json#chosen_point.harmless_weight"
    )
    prop = [t for t in data.section("reward_model").tables if "ropagation" in t.title]
    row = prop[0].rows[0]
    assert row[0] == "length" and [c.value for c in row[1:]] == [
        0.7, 0.5, 0.9, 0.4, 0.5, 0.9, None, None, None,
    ]  # fmt: skip
    assert row[4].source == "runs/ppo/propagation.json#runs[0].stages.reward_model.length"
    assert not [t for t in prop if "contrast" in t.title]  # none recorded, no table
    audit["policy_contrasts"] = [
        "garbage",
        {"run": "long", "minus": "balanced", "attributes": {"length": est, "politeness": 3}},
    ]
    (paths["ppo"] / "propagation.json").write_text(json.dumps(audit))
    tables = build_report(["runs/ppo"]).section("reward_model").tables
    (contrast,) = [t for t in tables if "contrast" in t.title]
    assert [r[:3] for r in contrast.rows] == [
        ["long", "balanced", "length"], ["long", "balanced", "politeness"],
    ]  # fmt: skip
    assert [c.value for c in contrast.rows[0][3:]] == [0.7, 0.5, 0.9]
    assert [c.value for c in contrast.rows[1][3:]] == [None, None, None]
    assert contrast.rows[0][3].source == (
        "runs/ppo/propagation.json#policy_contrasts[1].attributes.length"
    )
    (paths["ppo"] / "propagation.json").write_text(json.dumps({"length": {"raters": 0.7}}))
    prop = [t for t in build_report(["runs/ppo"]).section("reward_model").tables]
    assert prop[-1].title == "propagation audit" and prop[-1].rows[0][1].value == 0.7


def test_gold_reward_of_a_demo_run_with_the_last_kl(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = write_chain(tmp_path)
    gold = {
        "sft": {"gold": {"mean": -4.8, "ci95": [-5.0, -4.6], "n": 32},
                "length_words": {"mean": 33.4, "ci95": [30.2, 36.7], "n": 32}},
        "final": {"gold": {"mean": -4.3, "ci95": [-4.6, -4.0], "n": 32},
                  "length_words": {"mean": 25.7, "ci95": [21.4, 30.0], "n": 32}},
    }  # fmt: skip
    (paths["ppo"] / "gold.json").write_text(json.dumps(gold))
    data = build_report(["runs/ppo"])
    (table,) = [t for t in data.section("samples").tables if t.title.startswith("Gold reward")]
    rows = {r[0]: r[1:] for r in table.rows}
    assert [c.value for c in rows["trained policy: gold reward"]] == [-4.3, -4.6, -4.0, 32]
    assert rows["starting (SFT) policy: gold reward"][0].source == (
        "runs/ppo/gold.json#sft.gold.mean"
    )
    kl = rows["KL to the reference at the last step (nats)"][0]
    metrics = [json.loads(x) for x in (paths["ppo"] / "metrics.jsonl").read_text().splitlines()]
    assert kl.value == metrics[-1]["objective/kl"]
    assert "Gold reward on held-out prompts" in render_html(data, tmp_path)

    # a gold.json of the wrong shape shows what it can; garbage JSON names the file and line
    (paths["ppo"] / "gold.json").write_text(json.dumps({"sft": 3, "final": {"gold": "x"}}))
    (table,) = [
        t for t in build_report(["runs/ppo"]).section("samples").tables if "Gold" in t.title
    ]
    assert all(c.value is None for c in table.rows[0][1:])
    (paths["ppo"] / "gold.json").write_text('{"sft": ')
    with pytest.raises(InputError, match="gold.json:1: not valid JSON"):
        build_report(["runs/ppo"])


def test_unreadable_spec_is_a_note(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_chain(tmp_path, ppo_config={"spec": "no-such-personality"})
    data = build_report(["runs/ppo"])
    assert "could not be read" in " ".join(data.section("personality").notes)


def test_cli_json_round_trips_and_writes_the_page(chain, store, tmp_path, capsys):
    url, pid = store
    assert main(["report", "runs/ppo", "--json", "--database-url", url]) == 0
    printed = json.loads(capsys.readouterr().out)
    again = ReportData.from_dict(printed)
    assert again.to_dict() == printed
    direct = build_report(["runs/ppo"], database_url=url)
    assert json.loads(json.dumps(direct.to_dict())) == printed
    assert render_html(again, tmp_path) == render_html(direct, tmp_path)
    assert not (tmp_path / "report.html").exists()  # --json alone writes no page

    assert main(["report", "runs/ppo", "--out", "r/page.html"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"report": "r/page.html", "runs": ["runs/ppo", "runs/sft", "runs/rm"]}
    assert (tmp_path / "r" / "page.html").read_text().startswith("<!DOCTYPE html>")


def _fails(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_garbage_inputs_exit_2_with_path_and_line(chain, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "empty: not a run directory" in _fails(capsys, ["report", "empty"])
    assert "nowhere: no such run directory" in _fails(capsys, ["report", "nowhere"])
    assert "demos.jsonl: no such run directory" in _fails(capsys, ["report", "demos.jsonl"])

    bad = tmp_path / "bad"
    shutil.copytree(chain["ppo"], bad)
    with open(bad / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 11, "objective/kl": \n')
    assert "bad/metrics.jsonl:11: not valid JSON" in _fails(capsys, ["report", "bad"])
    (bad / "metrics.jsonl").write_text('{"step": 1}\n[1, 2]\n')
    assert "bad/metrics.jsonl:2: expected a JSON object" in _fails(capsys, ["report", "bad"])
    (bad / "metrics.jsonl").write_text("")

    (bad / "provenance.json").write_text('{\n  "kind": "ppo",\n  "inputs": {,\n}')
    assert "bad/provenance.json:3: not valid JSON" in _fails(capsys, ["report", "bad"])
    (bad / "provenance.json").write_text('{"kind": "ppo", "inputs": ["x"]}')
    assert "bad/provenance.json: field inputs" in _fails(capsys, ["report", "bad"])
    (bad / "provenance.json").write_bytes(b"\xff\xfe")
    assert "bad/provenance.json:1: not UTF-8" in _fails(capsys, ["report", "bad"])
    (bad / "provenance.json").write_text('{"kind": "ppo", "inputs": {}}')

    (bad / "config.yaml").write_text("a: 1\nb: [\n")
    assert "bad/config.yaml:3: not valid YAML" in _fails(capsys, ["report", "bad"])
    (bad / "config.yaml").write_text("a: 1\n")
    (bad / "eval.json").write_text("[]")
    assert "bad/eval.json:1: expected a JSON object" in _fails(capsys, ["report", "bad"])

    # a garbage parent is an error too: the chain cannot be told honestly
    (tmp_path / "runs" / "rm" / "metrics.jsonl").write_text("oops\n")
    assert "runs/rm/metrics.jsonl:1:" in _fails(capsys, ["report", "runs/ppo"])


def test_garbage_store_arguments_exit_2(chain, store, tmp_path, capsys):
    url, pid = store
    err = _fails(capsys, ["report", "runs/ppo", "--database-url", f"sqlite:///{tmp_path}/no.db"])
    assert "no.db: no such database file" in err
    assert not (tmp_path / "no.db").exists()  # the report created nothing
    (tmp_path / "junk.db").write_text("not a database")
    err = _fails(capsys, ["report", "runs/ppo", "--database-url", f"sqlite:///{tmp_path}/junk.db"])
    assert "cannot open the store" in err
    assert "expected e.g." in _fails(capsys, ["report", "runs/ppo", "--database-url", "nonsense"])
    err = _fails(capsys, ["report", "runs/ppo", "--database-url", url, "--project", "nope"])
    assert "project 'nope'" in err


def test_several_projects_need_project(chain, store, capsys):
    from rlhfkit.store import ProjectSettings, create_project, make_engine

    url, pid = store
    engine = make_engine(url)
    create_project(engine, ProjectSettings(name="second"))
    engine.dispose()
    assert "--project: the store holds 2 projects" in _fails(
        capsys, ["report", "runs/ppo", "--database-url", url]
    )
    data = build_report(["runs/ppo"], database_url=url, project="second")
    assert any("agreement not available" in n for n in data.section("raters").notes)
    assert any("too few for a bias profile" in n for n in data.section("bias").notes)


def test_store_without_project_and_empty_inputs(chain, tmp_path):
    from rlhfkit.store import make_engine, upgrade

    url = f"sqlite:///{tmp_path}/empty.db"
    upgrade(make_engine(url))
    data = build_report(["runs/ppo"], database_url=url)
    assert any("holds no project" in n for n in data.section("raters").notes)
    with pytest.raises(InputError, match="name at least one run"):
        build_report([])


def test_bias_profile_of_a_real_judged_file_matches_the_audit(tmp_path, monkeypatch, shared_data):
    """A reward run on HH-RLHF harmless: the report's length coefficient is the audit's
    (docs/raters.md: -0.325), and HH names no raters, which the report says."""
    from rlhfkit.raters.bias import audit_bias
    from tests.report.fake_runs import sha

    hh = shared_data("hh-rlhf/harmless-base-dev.jsonl.gz")
    monkeypatch.chdir(tmp_path)
    write_run(
        tmp_path / "rm",
        "reward",
        {"model": {"name": "tiny"}, "data": {"path": str(hh), "sha256": sha(hh)}},
        [{"train/loss": 0.7, "train/accuracy": 0.5}],
        extra={"pairs": 1800, "raters": {"raters": 0}},
    )
    data = build_report(["rm"])
    length = data.section("bias").tables[0].rows[0]
    expected = audit_bias(hh)["pool"]["coefficients"]["length"]["estimate"]
    assert length[0] == "length" and length[1].value == pytest.approx(expected)
    assert length[1].value == pytest.approx(-0.325, abs=0.001)
    assert "the data names no raters" in " ".join(data.section("raters").notes)
    assert "not available" in " ".join(data.section("raters").notes)
