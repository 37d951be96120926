"""Each format on small hand-written files: HH splitting, TRL variants, OASST shapes, writing."""

from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pyarrow.json as paj
import pyarrow.parquet as pq
import pytest

from rlhfkit.data import (
    PreferencePair,
    convert,
    detect_format,
    read_examples,
    read_preferences,
    write_preferences_jsonl,
)
from rlhfkit.data.hh import split_dialogues
from rlhfkit.errors import InputError


def write_lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- HH ------------------------------------------------------------------------------------------


def test_hh_single_turn_split():
    prompt, chosen, rejected = split_dialogues(
        "\n\nHuman: What is 2+2?\n\nAssistant: 4.",
        "\n\nHuman: What is 2+2?\n\nAssistant: 5.",
        "f:1",
    )
    assert prompt == [{"role": "user", "content": "What is 2+2?"}]
    assert (chosen, rejected) == ("4.", "5.")


def test_hh_multi_turn_shared_prefix_becomes_the_prompt():
    shared = "\n\nHuman: Hi\n\nAssistant: Hello, how can I help?\n\nHuman: Tell me a joke."
    prompt, chosen, rejected = split_dialogues(
        shared + "\n\nAssistant: Why did the chicken...", shared + "\n\nAssistant: No.", "f:1"
    )
    assert prompt == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    assert (chosen, rejected) == ("Why did the chicken...", "No.")


def test_hh_replies_of_different_length_and_double_assistant_turns():
    shared = "\n\nHuman: Help me."
    prompt, chosen, rejected = split_dialogues(
        shared + "\n\nAssistant: Sure.\n\nAssistant: Here is how.",
        shared + "\n\nAssistant: No.",
        "f:1",
    )
    assert prompt == [{"role": "user", "content": "Help me."}]
    assert chosen == "Sure.\n\nHere is how." and rejected == "No."


def test_hh_shared_assistant_start_is_not_part_of_the_prompt():
    # The replies share their first words but are different Assistant turns: the prompt still
    # ends at the Human turn.
    prompt, chosen, rejected = split_dialogues(
        "\n\nHuman: Q\n\nAssistant: A\n\nAssistant: B", "\n\nHuman: Q\n\nAssistant: A", "f:1"
    )
    assert prompt == [{"role": "user", "content": "Q"}]
    assert (chosen, rejected) == ("A\n\nB", "A")


def test_hh_dialogues_that_diverge_before_the_last_human_turn_are_refused():
    with pytest.raises(InputError, match=r"^f:3: chosen continues with a non-assistant message"):
        split_dialogues(
            "\n\nHuman: Q\n\nAssistant: A\n\nHuman: more\n\nAssistant: B",
            "\n\nHuman: Q\n\nAssistant: X\n\nHuman: more\n\nAssistant: B",
            "f:3",
        )


def test_hh_file_without_leading_blank_line_and_gzip(tmp_path):
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(
            json.dumps(
                {"chosen": "Human: Hi\n\nAssistant: Yo", "rejected": "Human: Hi\n\nAssistant: Go"}
            )
        )
    assert detect_format(path) == "hh"
    (pair,) = read_preferences(path)
    assert pair.prompt == [{"role": "user", "content": "Hi"}] and pair.source == f"{path}:1"


# --- TRL -----------------------------------------------------------------------------------------

CONV_PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    "record",
    [
        {"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"},
        {
            "prompt": [{"role": "user", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": "Hello"}],
            "rejected": [{"role": "assistant", "content": "Go away"}],
        },
        {  # implicit prompt: whole conversations
            "chosen": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
            ],
            "rejected": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Go away"},
            ],
        },
        {  # UltraFeedback style: explicit prompt repeated in the conversations
            "prompt": "Hi",
            "chosen": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
            ],
            "rejected": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Go away"},
            ],
        },
    ],
    ids=["text", "conversational", "implicit", "repeated-prompt"],
)
def test_trl_preference_variants_read_the_same(tmp_path, record):
    (pair,) = read_preferences(write_lines(tmp_path / "p.jsonl", [record]))
    assert pair.prompt == [{"role": "user", "content": "Hi"}]
    assert (pair.chosen, pair.rejected) == ("Hello", "Go away")


def test_trl_provenance_and_unknown_keys_are_kept(tmp_path):
    record = {
        "prompt": CONV_PROMPT,
        "chosen": "a",
        "rejected": "b",
        "rater_id": 17,
        "labels": {"helpful": 1},
        "margin": 2,
        "tie": False,
        "item_id": "q1",
        "score_chosen": 8.5,
    }
    path = write_lines(tmp_path / "p.jsonl", [record])
    (pair,) = read_preferences(path)
    assert pair.rater_id == "17" and pair.labels == {"helpful": 1} and pair.margin == 2.0
    assert pair.item_id == "q1" and pair.meta == {"score_chosen": 8.5}
    assert pair.source == f"{path}:1" and pair.prompt == CONV_PROMPT


def test_trl_json_array_and_parquet(tmp_path):
    records = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(3)]
    array = tmp_path / "p.json"
    array.write_text(json.dumps(records, indent=2), encoding="utf-8")
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet)
    from_array, from_parquet = read_preferences(array), read_preferences(parquet)
    assert [p.prompt[0]["content"] for p in from_array] == ["q0", "q1", "q2"]
    assert from_array[1].source == f"{array}:7"  # the line the second element starts on
    assert [p.prompt for p in from_parquet] == [p.prompt for p in from_array]
    assert from_parquet[2].source == f"{parquet}:3"  # parquet: the row number


def test_trl_unpaired_and_demonstrations(tmp_path):
    path = write_lines(
        tmp_path / "u.jsonl",
        [
            {"prompt": "Hi", "completion": "Hello", "label": True},
            {
                "prompt": CONV_PROMPT,
                "completion": [{"role": "assistant", "content": "Bye"}],
                "label": False,
            },
            {"prompt": "Hi", "completion": "Hey"},
            {"messages": [*CONV_PROMPT, {"role": "assistant", "content": "Hey there"}]},
        ],
    )
    examples = read_examples(path)
    assert [e.label for e in examples] == [True, False, None, None]
    assert examples[1].completion == "Bye" and examples[3].prompt == CONV_PROMPT
    assert examples[3].completion == "Hey there"
    with pytest.raises(InputError, match=r"u.jsonl:1: this is a record of examples"):
        read_preferences(path)


def test_examples_file_converts_to_prompt_completion_label(tmp_path):
    path = write_lines(
        tmp_path / "u.jsonl", [{"prompt": "Hi", "completion": "Hello", "label": True}]
    )
    out = tmp_path / "out.jsonl"
    assert convert(path, out)["kind"] == "examples"
    (line,) = out.read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert record["prompt"] == [{"role": "user", "content": "Hi"}]
    assert record["completion"] == [{"role": "assistant", "content": "Hello"}]
    assert record["label"] is True


# --- OASST shapes ---------------------------------------------------------------------------------


def _msg(mid, parent, role, text, rank=None, **extra):
    return {
        "message_id": mid,
        "parent_id": parent,
        "role": role,
        "text": text,
        "rank": rank,
        **extra,
    }


def test_oasst_flat_messages_match_nested_tree(tmp_path):
    flat = [
        _msg("r", None, "prompter", "Question?"),
        _msg("a", "r", "assistant", "Best", 0),
        _msg("b", "r", "assistant", "Worst", 2),
        _msg("c", "r", "assistant", "Middle", 1),
        _msg("d", "r", "assistant", "Deleted", 3, deleted=True),
        _msg("f", "a", "prompter", "Follow-up?"),
        _msg("g", "f", "assistant", "Sure", 0),
        _msg("h", "f", "assistant", "Nope", 1),
    ]
    flat_path = write_lines(tmp_path / "flat.jsonl", flat)
    by_id = {m["message_id"]: {**m, "replies": []} for m in flat}
    for m in flat:
        if m["parent_id"]:
            by_id[m["parent_id"]]["replies"].append(by_id[m["message_id"]])
    nested_path = write_lines(
        tmp_path / "tree.jsonl", [{"message_tree_id": "r", "prompt": by_id["r"]}]
    )
    assert detect_format(flat_path) == detect_format(nested_path) == "oasst"
    for path in (flat_path, nested_path):
        pairs = read_preferences(path)
        got = [(p.chosen, p.rejected, p.margin) for p in pairs]
        assert got == [
            ("Best", "Middle", 1.0),
            ("Best", "Worst", 2.0),
            ("Middle", "Worst", 1.0),
            ("Sure", "Nope", 1.0),
        ]
        assert pairs[-1].prompt == [
            {"role": "user", "content": "Question?"},
            {"role": "assistant", "content": "Best"},
            {"role": "user", "content": "Follow-up?"},
        ]
        assert [e.completion for e in read_examples(path)] == ["Best", "Sure"]


def test_oasst_labels_from_either_layout(tmp_path):
    tree = _msg(
        "r",
        None,
        "prompter",
        "Q?",
        replies=[
            _msg(
                "a", "r", "assistant", "A", 0, replies=[], labels={"name": ["spam"], "value": [0.0]}
            ),
            _msg(
                "b",
                "r",
                "assistant",
                "B",
                1,
                replies=[],
                labels={"spam": {"value": 0.5, "count": 2}},
            ),
        ],
    )
    (pair,) = read_preferences(write_lines(tmp_path / "t.jsonl", [tree]))
    assert pair.labels == {"chosen": {"spam": 0.0}, "rejected": {"spam": 0.5}}


# --- writing --------------------------------------------------------------------------------------


def test_written_pairs_are_trl_conversational_and_round_trip(tmp_path):
    pairs = [
        PreferencePair(
            CONV_PROMPT,
            "a",
            "b",
            rater_id="r1",
            labels={"helpful": 1},
            margin=1.5,
            item_id="i",
            source="x:1",
            meta={"votes": [1, 2]},
        ),
        PreferencePair([{"role": "user", "content": "Q"}], "", "b", tie=True),
    ]
    out = tmp_path / "out.jsonl"
    write_preferences_jsonl(pairs, out)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["chosen"] == [{"role": "assistant", "content": "a"}]
    assert (
        set(lines[0])
        == set(lines[1])
        == {
            "prompt",
            "chosen",
            "rejected",
            "rater_id",
            "labels",
            "margin",
            "tie",
            "item_id",
            "source",
            "meta",
        }
    )
    assert lines[1]["labels"] is None and lines[1]["source"] is None
    assert read_preferences(out) == pairs
    table = paj.read_json(out)
    assert table.schema.field("margin").type == pa.float64()
    assert table.schema.field("tie").type == pa.bool_()


def test_gzip_output_round_trips(tmp_path):
    pairs = [PreferencePair([{"role": "user", "content": "Q"}], "a", "b")]
    out = tmp_path / "out.jsonl.gz"
    write_preferences_jsonl(pairs, out)
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    assert read_preferences(out)[0].chosen == "a"


def test_writer_refuses_a_column_whose_type_changes_and_leaves_nothing(tmp_path):
    pairs = [
        PreferencePair([{"role": "user", "content": "Q"}], "a", "b", labels={"helpful": 1}),
        PreferencePair([{"role": "user", "content": "Q"}], "a", "b", labels={"helpful": "yes"}),
    ]
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputError, match=r"out.jsonl:2: column labels.helpful is a string here"):
        write_preferences_jsonl(pairs, out)
    assert os.listdir(tmp_path) == []


def test_writer_replaces_an_existing_file_only_on_success(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n", encoding="utf-8")

    def pairs():
        yield PreferencePair([{"role": "user", "content": "Q"}], "a", "b")
        raise InputError("x:2: broken")

    with pytest.raises(InputError):
        write_preferences_jsonl(pairs(), out)
    assert out.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]


@pytest.mark.parametrize(
    "record, name",
    [
        ({"question_id": 1, "category": "writing", "turns": ["Write a haiku."]}, "mt-bench"),
        ({"turns": ["Write a haiku."]}, "mt-bench"),
        # a TRL record that happens to carry a turns column stays TRL's
        ({"prompt": "Hi", "chosen": "Hello", "rejected": "Go", "turns": 2}, "trl"),
        ({"prompt": "Hi", "completion": "Hello", "turns": ["x"]}, "trl"),
        ({"messages": [{"role": "user", "content": "Hi"}], "turns": 1}, "trl"),
    ],
)
def test_mt_bench_is_told_from_trl_records_with_a_turns_key(tmp_path, record, name):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert detect_format(path) == name


def test_the_cli_lists_every_format(capsys, monkeypatch):
    """The CLI spells the list out (it imports no data code to build its parser): it must not
    fall behind the registry."""
    from rlhfkit.cli import main
    from rlhfkit.data.formats import FORMATS

    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside a hyphenated name
    with pytest.raises(SystemExit):
        main(["data", "validate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in FORMATS:
        assert name in text, name
