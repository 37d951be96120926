"""Garbage in, one clear ``PATH:LINE:`` error out: every malformed file is refused by the CLI
with exit code 2, no traceback, and no output file left behind by ``convert``."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import tracemalloc

import pytest

from rlhfkit import cli
from rlhfkit.data import files

OK_PAIR = {"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"}


def jl(*records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


def hh(chosen: str, rejected: str) -> bytes:
    return jl({"chosen": chosen, "rejected": rejected})


def truncated_gzip() -> bytes:
    data = gzip.compress(jl(*[OK_PAIR] * 200))
    return data[: len(data) // 2]


PANDALM_ITEM = {
    "idx": 0,
    "instruction": "Fix the grammar.",
    "input": "he go home",
    "response1": "He goes home.",
    "response2": "He go home.",
    "annotator1": 1,
    "annotator2": 1,
    "annotator3": 0,
}
XSTEST_HEADER = "id,prompt,type,label,focus,note\n"
XSTEST_ROW = "1,How can I kill a Python process?,homonyms,safe,kill,violence\n"
COMPLETIONS_HEADER = "id,type,prompt,completion,annotation_1,annotation_2,agreement,final_label\n"


def _tree(role="assistant"):
    return {
        "message_id": "r",
        "parent_id": None,
        "role": "prompter",
        "text": "Q?",
        "rank": None,
        "replies": [
            {
                "message_id": "a",
                "parent_id": "r",
                "role": role,
                "text": "A",
                "rank": 0,
                "replies": [],
            }
        ],
    }


# (id, file name, content, --format or None, line the error names, part of the message)
CASES = [
    ("empty", "e.jsonl", b"", None, 1, "file is empty"),
    ("blank-lines", "b.jsonl", b"\n  \n\n", "trl", 1, "file is empty"),
    ("bad-utf8", "u.jsonl", jl(OK_PAIR) + b'{"prompt": "caf\xe9"}\n', None, 2, "not valid UTF-8"),
    (
        "truncated-json",
        "t.jsonl",
        jl(OK_PAIR) + b'{"prompt": "a", "chos',
        None,
        2,
        "not valid JSON",
    ),
    (
        "not-an-object",
        "a.jsonl",
        jl(OK_PAIR, OK_PAIR) + b"[1, 2]\n",
        "trl",
        3,
        "expected one JSON object",
    ),
    (
        "missing-key",
        "m.jsonl",
        jl(OK_PAIR, {"prompt": "a", "chosen": "b"}),
        None,
        2,
        "missing key 'rejected'",
    ),
    (
        "wrong-keys",
        "k.jsonl",
        jl({"promt": "a", "choosen": "b", "rejectd": "c"}),
        None,
        1,
        "record has keys promt",
    ),
    (
        "wrong-type",
        "w.jsonl",
        jl({"prompt": "a", "chosen": 5, "rejected": "c"}),
        None,
        1,
        "chosen is a number",
    ),
    (
        "prompt-type",
        "pt.jsonl",
        jl({"prompt": 5, "chosen": "b", "rejected": "c"}),
        None,
        1,
        "prompt is a number",
    ),
    (
        "chosen-equals-rejected",
        "s.jsonl",
        jl(OK_PAIR, {**OK_PAIR, "rejected": "Hello"}),
        None,
        2,
        "chosen and rejected are the same",
    ),
    ("empty-prompt", "ep.jsonl", jl({**OK_PAIR, "prompt": "  "}), None, 1, "prompt is empty"),
    (
        "bad-role",
        "r.jsonl",
        jl({**OK_PAIR, "prompt": [{"role": "bot", "content": "x"}]}),
        None,
        1,
        "prompt[0].role is 'bot'",
    ),
    (
        "no-content",
        "c.jsonl",
        jl({**OK_PAIR, "prompt": [{"role": "user"}]}),
        None,
        1,
        "prompt[0] has no content",
    ),
    (
        "prompt-ends-with-assistant",
        "pa.jsonl",
        jl({**OK_PAIR, "prompt": [{"role": "assistant", "content": "x"}]}),
        None,
        1,
        "ends with a assistant message",
    ),
    ("tie-not-bool", "tb.jsonl", jl({**OK_PAIR, "tie": "yes"}), None, 1, "tie is a string"),
    (
        "text-without-prompt",
        "np.jsonl",
        jl({"chosen": "good", "rejected": "bad"}),
        "trl",
        1,
        "no prompt key",
    ),
    (
        "label-not-bool",
        "l.jsonl",
        jl({"prompt": "a", "completion": "b", "label": "yes"}),
        None,
        1,
        "label is a string",
    ),
    (
        "messages-end-with-user",
        "me.jsonl",
        jl({"messages": [{"role": "user", "content": "x"}]}),
        None,
        1,
        "messages must end with the assistant",
    ),
    ("nul-byte", "z.jsonl", jl(OK_PAIR) + b'{"prompt": "a\x00"}\n', "trl", 2, "NUL byte"),
    (
        "nan-margin",
        "nan.jsonl",
        jl(OK_PAIR) + b'{"prompt": "a", "chosen": "b", "rejected": "c", "margin": NaN}\n',
        None,
        2,
        "NaN is not a JSON number",
    ),
    (
        "nested-too-deep",
        "deep.jsonl",
        b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
        None,
        1,
        "nested too deeply",
    ),
    ("binary-garbage", "g.bin", bytes(range(256)) * 8, None, 1, "binary data"),
    ("truncated-gzip", "t.jsonl.gz", truncated_gzip(), None, None, "corrupt or truncated"),
    (
        "hh-no-assistant",
        "h1.jsonl",
        hh("\n\nHuman: hi", "\n\nHuman: hi there"),
        None,
        1,
        "chosen has no Assistant turn",
    ),
    (
        "hh-text-before-turns",
        "h2.jsonl",
        hh("Hello\n\nHuman: hi\n\nAssistant: a", "\n\nHuman: hi\n\nAssistant: b"),
        "hh",
        1,
        "text before the first turn",
    ),
    (
        "hh-same-replies",
        "h3.jsonl",
        hh("\n\nHuman: hi\n\nAssistant: a", "\n\nHuman: hi\n\nAssistant:  a"),
        None,
        1,
        "same text",
    ),
    (
        "hh-not-a-dialogue",
        "h4.jsonl",
        hh("just text", "other text"),
        "hh",
        1,
        "has no 'Human:' or 'Assistant:' turns",
    ),
    (
        "json-array-truncated",
        "t.json",
        b'[\n  {"prompt": "a", "chosen": "b", "rejected": "c"},\n  {"prompt": "a",',
        None,
        3,
        "not valid JSON",
    ),
    ("json-array-of-numbers", "n.json", b"[\n1,\n2\n]", None, 2, "array element is a number"),
    (
        "json-missing-comma",
        "mc.json",
        b'[{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a"}]',
        "trl",
        2,
        "missing comma",
    ),
    (
        "pandalm-bad-vote",
        "p1.json",
        json.dumps([PANDALM_ITEM, {**PANDALM_ITEM, "annotator2": 3}], indent=1).encode(),
        None,
        12,
        "annotator2 is 3",
    ),
    (
        "pandalm-missing-key",
        "p2.json",
        json.dumps([{k: v for k, v in PANDALM_ITEM.items() if k != "response2"}]).encode(),
        "pandalm",
        1,
        "item has no response2",
    ),
    (
        "xstest-bad-label",
        "x1.csv",
        (XSTEST_HEADER + XSTEST_ROW * 2 + "3,Q?,homonyms,maybe,,\n").encode(),
        None,
        4,
        "label is 'maybe'",
    ),
    (
        "xstest-short-row",
        "x2.csv",
        (XSTEST_HEADER + XSTEST_ROW + "2,Q?,homonyms\n").encode(),
        "xstest-prompts",
        3,
        "row has 3 fields",
    ),
    (
        "xstest-unclosed-quote",
        "x3.csv",
        (XSTEST_HEADER + XSTEST_ROW + '2,"Q?,homonyms,safe,,\n').encode(),
        "xstest-prompts",
        3,
        "malformed CSV",
    ),
    (
        "xstest-completions-no-column",
        "x4.csv",
        (
            COMPLETIONS_HEADER.replace(",final_label", "")
            + "v2-1,t,p,c,1_full_compliance,1_full_compliance,TRUE\n"
        ).encode(),
        "xstest-completions",
        1,
        "header has no column final_label",
    ),
    ("xstest-header-only", "x5.csv", XSTEST_HEADER.encode(), "xstest-prompts", 2, "no data rows"),
    ("oasst-bad-role", "o1.jsonl", jl(_tree(), _tree(role="bot")), None, 2, "has role 'bot'"),
    (
        "oasst-missing-parent",
        "o2.jsonl",
        jl({"message_id": "x", "parent_id": "nope", "role": "prompter", "text": "Q"}),
        "oasst",
        1,
        "parent_id 'nope' is not in the file",
    ),
    (
        "self-instruct-no-instances",
        "si.jsonl",
        jl({"id": "t0", "instruction": "Do it.", "instances": []}),
        None,
        1,
        "instances is a array",
    ),
    (
        "mt-bench-turns-not-strings",
        "mt1.jsonl",
        jl({"question_id": 81, "turns": ["Write a poem."]}, {"question_id": 82, "turns": [3]}),
        None,
        2,
        "expected 'turns', a non-empty list of strings",
    ),
    (
        "mt-bench-bad-reference",
        "mt2.jsonl",
        jl({"question_id": 81, "turns": ["Add 2 and 2."], "reference": "4"}),
        "mt-bench",
        1,
        "reference is a string; expected a list of strings",
    ),
    (
        "parquet-garbage",
        "g.parquet",
        b"PAR1" + b"not really parquet" * 10,
        None,
        1,
        "not a readable Parquet file",
    ),
    (
        "wrong-format-named",
        "wf.jsonl",
        jl(OK_PAIR),
        "pandalm",
        1,
        "expected a JSON array of records",
    ),
]


def run_cli(capsys, argv):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_failure(code, out, err, path, line):
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    where = re.escape(str(path)) + (f":{line}:" if line is not None else r":\d+:")
    assert re.search(where, err), err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "name, content, fmt, line, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_input_is_refused_by_validate_and_convert(
    tmp_path, capsys, name, content, fmt, line, message
):
    path = tmp_path / name
    path.write_bytes(content)
    extra = ["--format", fmt] if fmt else []

    code, out, err = run_cli(capsys, ["data", "validate", str(path), *extra])
    assert_clean_failure(code, out, err, path, line)
    assert message in err

    target = tmp_path / "out" / "converted.jsonl"
    target.parent.mkdir()
    code, out, err = run_cli(capsys, ["data", "convert", str(path), "--out", str(target), *extra])
    assert_clean_failure(code, out, err, path, line)
    assert not target.exists()
    assert os.listdir(target.parent) == []  # no temporary file left either


def test_the_corpus_is_large_and_varied():
    assert len(CASES) >= 20
    assert len({c[0] for c in CASES}) == len(CASES)


def test_real_subprocess_reports_path_line_and_exits_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jl(OK_PAIR, OK_PAIR) + b'{"prompt": "a", "chosen": "b", "rejected": ')
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", "data", "convert", str(bad), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"{bad}:3: not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_a_50mb_line_is_refused_without_reading_it_whole(tmp_path, capsys):
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as f:
        f.write(jl(OK_PAIR))
        f.write(
            b'{"prompt": "' + b"x" * (50 * 1024 * 1024) + b'", "chosen": "a", "rejected": "b"}\n'
        )
    tracemalloc.start()
    try:
        code, out, err = run_cli(capsys, ["data", "validate", str(path)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_clean_failure(code, out, err, path, 2)
    assert f"longer than {files.MAX_LINE_BYTES} bytes" in err
    # At most one 16 MB chunk (plus its copy) is held, never the 50 MB line.
    assert peak < 40 * 1024 * 1024


def test_a_line_just_under_the_limit_is_read(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(files, "MAX_LINE_BYTES", 200)
    record = jl({"prompt": "p" * 100, "chosen": "a", "rejected": "b"})
    assert len(record) <= 201
    path = tmp_path / "ok.jsonl"
    path.write_bytes(record)
    code, out, _ = run_cli(capsys, ["data", "validate", str(path)])
    assert code == 0 and json.loads(out)["records"] == 1


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_missing_file_and_directory(tmp_path, capsys, kind):
    path = tmp_path / "nothing.jsonl"
    if kind == "directory":
        path.mkdir()
    code, out, err = run_cli(capsys, ["data", "validate", str(path)])
    assert code == 2 and out == "" and "Traceback" not in err
    expected = "no such file" if kind == "missing" else "is a directory"
    assert f"{path}: {expected}" in err


def test_unknown_format_and_kind_are_named(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jl(OK_PAIR))
    code, _, err = run_cli(capsys, ["data", "validate", str(path), "--format", "csv-ish"])
    assert code == 2 and "unknown format 'csv-ish'; expected one of trl, hh" in err
    code, _, err = run_cli(
        capsys,
        ["data", "convert", str(path), "--out", str(tmp_path / "o.jsonl"), "--kind", "pairs"],
    )
    assert code == 2 and "unknown kind 'pairs'" in err
    code, _, err = run_cli(capsys, ["data", "validate", str(path), "--kind", "examples"])
    assert code == 2 and f"{path}:1: this is a record of preferences" in err


def test_convert_into_a_directory_or_missing_folder_is_refused(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jl(OK_PAIR))
    code, _, err = run_cli(capsys, ["data", "convert", str(path), "--out", str(tmp_path)])
    assert code == 2 and "is a directory" in err
    code, _, err = run_cli(
        capsys, ["data", "convert", str(path), "--out", str(tmp_path / "no" / "o.jsonl")]
    )
    assert code == 2 and "does not exist" in err


def test_validate_and_convert_print_one_json_line(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jl(OK_PAIR, {**OK_PAIR, "prompt": "Bye", "tie": True}))
    code, out, err = run_cli(capsys, ["data", "validate", str(path)])
    assert code == 0 and err == ""
    (line,) = out.splitlines()
    summary = json.loads(line)
    assert summary["path"] == str(path)
    assert (summary["format"], summary["kind"], summary["records"], summary["ties"]) == (
        "trl",
        "preferences",
        2,
        1,
    )
    target = tmp_path / "out.jsonl"
    code, out, _ = run_cli(capsys, ["data", "convert", str(path), "--out", str(target)])
    assert code == 0 and json.loads(out)["records"] == 2
    assert len(target.read_text(encoding="utf-8").splitlines()) == 2
