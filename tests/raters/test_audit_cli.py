"""`rlhfkit audit agreement|bias`: JSON on real files, exit 2 with one clear line on garbage."""

from __future__ import annotations

import json

import pytest

from rlhfkit.cli import main

PANDALM = (
    '[{"idx": 1, "instruction": "i", "input": "", "response1": "a", "response2": "b", '
    '"annotator1": 1, "annotator2": 2, "annotator3": 0}]'
)
XSTEST = "id,prompt,completion,annotation_1,annotation_2,final_label\n"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["agreement", "bias"])
def test_help(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main(["audit", command, "--help"])
    assert exc.value.code == 0
    assert "PATH" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["audit", "propagation"], ["personality", "compare"]])
def test_descriptions_show_a_single_percent_sign(capsys, argv):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    out = capsys.readouterr().out
    assert "95% CI" in out and "%%" not in out
    with pytest.raises(SystemExit):
        main([argv[0], "--help"])  # the parent's list of commands formats the same text
    assert "95% CI" in capsys.readouterr().out


def test_agreement_json_on_pandalm(capsys, shared_data):
    path = shared_data("pandalm/testset-v1.json")
    code, out, _ = _run(capsys, "audit", "agreement", str(path), "--json")
    report = json.loads(out)
    assert code == 0
    assert round(report["fleiss_kappa"], 3) == 0.864
    assert round(report["krippendorff_alpha"], 3) == 0.864
    assert report["dawid_skene"]["agreement_with_majority"] >= 0.95


def test_agreement_text_on_xstest(capsys, shared_data):
    path = shared_data("xstest/xstest_v2_completions_gpt4.csv")
    code, out, _ = _run(capsys, "audit", "agreement", str(path))
    assert code == 0
    assert "annotation_1 / annotation_2: 0.970" in out
    assert "gold accuracy" in out


def test_bias_json_on_hh(capsys, shared_data):
    path = shared_data("hh-rlhf/harmless-base-dev.jsonl.gz")
    code, out, _ = _run(capsys, "audit", "bias", str(path), "--json")
    report = json.loads(out)
    assert code == 0 and report["pool"]["n_judgments"] == 1800
    length = report["pool"]["coefficients"]["length"]
    assert length["ci_low"] <= length["estimate"] <= length["ci_high"]


@pytest.mark.parametrize(
    "command, name, content, message",
    [
        ("agreement", "x.json", '[{"idx": 1, "annotator1": 9', "JSON"),
        (
            "agreement",
            "x.json",
            PANDALM.replace('"annotator1": 1', '"annotator1": "a"'),
            "annotator1",
        ),
        (
            "agreement",
            "x.csv",
            XSTEST + "v1,p,hi,,2_full_refusal,1_full_compliance\n",
            ":2: annotation_1",
        ),
        ("agreement", "x.bin", "\x00\x01garbage", "binary data"),
        ("agreement", "x.jsonl", '{"item_id": 1, "rater_id": "a"}\n', ":1: missing label"),
        ("agreement", "x.csv", "item_id,rater_id,label\n", "no annotations to analyse"),
        ("agreement", "x.jsonl", '{"item_id": 1, "rater_id": "a", "label": "x"}\n[1]\n', ":2:"),
        ("agreement", "x.jsonl", '{"prompt": "p", "chosen": "a", "rejected": "b"}\n', "rater_id"),
        ("bias", "x.jsonl", '{"chosen": "a", "rejected": "b"}\n', "expected a prompt key"),
        ("bias", "x.jsonl", "not json at all\n", "cannot tell the format"),
        ("bias", "x.json", PANDALM.replace('"response2": "b", ', ""), "response2"),
        (
            "bias",
            "x.csv",
            XSTEST + "v1,p,hi,2_full_refusal,2_full_refusal,2_full_refusal\n",
            "not judged pairs",
        ),
    ],
)
def test_garbage_exits_2_with_a_message(capsys, tmp_path, command, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    code, out, err = _run(capsys, "audit", command, str(path))
    assert code == 2
    assert message in err and str(path) in err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("command", ["agreement", "bias"])
def test_missing_file_exits_2(capsys, tmp_path, command):
    code, _, err = _run(capsys, "audit", command, str(tmp_path / "absent.json"))
    assert code == 2 and "absent.json" in err


def test_unknown_format_exits_2(capsys, tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("item_id,rater_id,label\n1,a,x\n")
    code, _, err = _run(capsys, "audit", "agreement", str(path), "--format", "nope")
    assert code == 2 and "unknown format 'nope'" in err
