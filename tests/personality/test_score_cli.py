"""`rlhfkit score ATTRIBUTE --input FILE --text-field NAME` on csv, jsonl and garbage."""

from __future__ import annotations

import json

import pytest

from rlhfkit.cli import main
from rlhfkit.personality import score

TEXTS = [
    "Sorry, but I can't assist with that.",
    'Sure, here is how:\n1. open it\n2. "edit" it, carefully\n3. save it',
    "Thank you! Happy to help.",
]


def _run(capsys, *args: str) -> tuple[int, list[dict], str]:
    code = main(["score", *args])
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    return code, rows, captured.err


def _write_csv(path, texts, field="text"):
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", field, "extra"])
        for i, t in enumerate(texts):
            writer.writerow([i, t, "x"])


def test_csv_with_multiline_quoted_fields(tmp_path, capsys):
    path = tmp_path / "replies.csv"
    _write_csv(path, TEXTS)
    code, rows, err = _run(capsys, "refusal", "--input", str(path), "--text-field", "text")
    assert code == 0, err
    assert rows == [{"refusal": s} for s in score("refusal", TEXTS)]
    assert rows[0]["refusal"] >= 0.5 > rows[1]["refusal"]


def test_jsonl_in_order_and_to_a_file(tmp_path, capsys):
    path = tmp_path / "replies.jsonl"
    lines = [json.dumps({"completion": t, "n": i}) for i, t in enumerate(TEXTS)]
    path.write_text("\n".join(lines[:2]) + "\n\n" + lines[2] + "\n")  # a blank line is skipped
    out = tmp_path / "scores.jsonl"
    code, rows, err = _run(
        capsys, "politeness", "--input", str(path), "--text-field", "completion", "--out", str(out)
    )
    assert code == 0, err
    assert rows == []  # nothing on stdout when --out is given
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == [{"politeness": s} for s in score("politeness", TEXTS)]
    assert written[2]["politeness"] > written[1]["politeness"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_gzipped_jsonl(tmp_path, capsys):
    import gzip

    path = tmp_path / "replies.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps({"t": t}) + "\n" for t in TEXTS).encode()))
    code, rows, err = _run(capsys, "formatting", "--input", str(path), "--text-field", "t")
    assert code == 0, err
    assert rows == [{"formatting": s} for s in score("formatting", TEXTS)]


def test_every_attribute_runs(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"t": TEXTS[1]}) + "\n")
    for attribute in (
        "politeness",
        "hedging",
        "length",
        "concision",
        "formality",
        "sentiment",
        "sarcasm",
        "formatting",
    ):
        code, rows, err = _run(capsys, attribute, "--input", str(path), "--text-field", "t")
        assert code == 0, err
        assert list(rows[0]) == [attribute] and 0.0 <= rows[0][attribute] <= 1.0


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["score", "--help"])
    assert info.value.code == 0
    assert "--text-field" in capsys.readouterr().out


def _fails(
    capsys,
    tmp_path,
    content: bytes | str,
    name: str,
    expected: str,
    attribute: str = "refusal",
    field: str = "text",
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")
    code, rows, err = _run(
        capsys, attribute, "--input", str(path), "--text-field", field, "--out", str(out)
    )
    assert code == 2
    assert rows == []
    assert err.startswith("rlhfkit: ") and "Traceback" not in err
    assert expected.format(path=path) in err, err
    assert out.read_text() == "previous\n"  # bad input leaves an existing output untouched


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.jsonl", '{"text": "ok"}\n{"text": "ok"\n', "{path}:2: not valid JSON"),
        (
            "a.jsonl",
            '{"text": "ok"}\n["text"]\n',
            "{path}:2: a JSON array; expected one JSON object per line",
        ),
        (
            "a.jsonl",
            '{"text": "ok"}\n\n{"body": "x"}\n',
            "{path}:3: no field 'text'; the record has body",
        ),
        ("a.jsonl", '{"text": 3}\n', "{path}:1: field 'text' is number, expected a string"),
        ("a.jsonl", '{"text": null}\n', "{path}:1: field 'text' is null, expected a string"),
        ("a.jsonl", b'{"text": "ok"}\n{"text": "\xff\xfe"}\n', "{path}:2: not valid UTF-8"),
        ("a.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00binary", "{path}:1: not valid UTF-8"),
        ("a.jsonl", b'{"text": "ok"}\n{"text": "a\x00b"}\n', "{path}:2: contains a NUL byte"),
        ("a.jsonl.gz", b"\x1f\x8bnot really gzip", "{path}:1: compressed data is corrupt"),
        ("a.jsonl", "", "{path}:1: file is empty"),
        ("a.jsonl", "\n\n", "{path}:1: file is empty"),
        ("a.csv", "id,body\n1,hello\n", "{path}:1: no column 'text'; the header has id, body"),
        ("a.csv", 'id,text\n1,"fine"\n2,"unclosed\n', "{path}:3: malformed CSV"),
        ("a.csv", "id,text\n1,a\n2,b,c\n", "{path}:3: row has 3 fields; expected 2"),
        ("a.csv", "", "{path}:1: file is empty"),
        ("a.csv", "id,text\n", "{path}: no records"),
        ("a.txt", "text\nhello\n", "{path}: unsupported file type .txt; expected .csv or .jsonl"),
    ],
)
def test_garbage_input(tmp_path, capsys, name, content, expected):
    _fails(capsys, tmp_path, content, name, expected)


def test_missing_file_directory_and_unknown_attribute(tmp_path, capsys):
    code, _, err = _run(
        capsys, "refusal", "--input", str(tmp_path / "no.jsonl"), "--text-field", "t"
    )
    assert code == 2 and "no.jsonl: no such file" in err
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    code, _, err = _run(capsys, "refusal", "--input", str(folder), "--text-field", "t")
    assert code == 2 and "is a directory" in err
    good = tmp_path / "good.jsonl"
    good.write_text('{"t": "x"}\n')
    code, _, err = _run(capsys, "rudeness", "--input", str(good), "--text-field", "t")
    assert code == 2 and "unknown attribute 'rudeness'" in err
    code, _, err = _run(
        capsys, "rm:" + str(tmp_path) + "#0", "--input", str(good), "--text-field", "t"
    )
    assert code == 2 and "not a model directory" in err
    code, _, err = _run(
        capsys,
        "refusal",
        "--input",
        str(good),
        "--text-field",
        "t",
        "--out",
        str(tmp_path / "missing-dir" / "o.jsonl"),
    )
    assert code == 2 and "cannot write there" in err
