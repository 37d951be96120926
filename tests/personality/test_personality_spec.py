"""Personality specs: built-ins, validation errors that name file/line/field, and the
composite reward's arithmetic worked by hand."""

from __future__ import annotations

import pytest

from rlhfkit.errors import InputError
from rlhfkit.personality import (
    ATTRIBUTES,
    DEFAULT_SPEC,
    PersonalitySpec,
    builtin_specs,
    composite_reward,
    load_spec,
    parse_spec,
    score,
    term_spreads,
)
from rlhfkit.personality.spec import MIN_SPREAD

GOOD = """\
name: test
description: A test personality.
weights:
  politeness: 1.0
  head:helpful: 0.5
kl_budget: 4
"""


def test_builtin_specs_load_and_are_described():
    names = builtin_specs()
    for expected in (
        "helpful-harmless",
        "concise",
        "warm-and-polite",
        "blunt",
        "sarcastic",
        "cautious",
    ):
        assert expected in names
    assert DEFAULT_SPEC == "helpful-harmless"
    for name in names:
        spec = load_spec(name)
        assert spec.name == name
        assert len(spec.description.split()) >= 8, name
        assert spec.weights and spec.kl_budget > 0
        for term in spec.weights:
            assert term in ATTRIBUTES or term.startswith(("head:", "rm:"))
    assert load_spec().name == "helpful-harmless"
    assert load_spec().heads() == ["helpful", "harmless"]


def test_builtin_specs_point_the_intended_way():
    concise, warm = load_spec("concise"), load_spec("warm-and-polite")
    short, chatty = "Yes.", "Thank you so much for asking! I'd be happy to help, of course. " * 3
    assert composite_reward(concise, [short])[0] > composite_reward(concise, [chatty])[0]
    assert composite_reward(warm, [chatty])[0] > composite_reward(warm, [short])[0]


def test_load_spec_from_a_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    spec = load_spec(path)
    assert spec == PersonalitySpec(
        "test", "A test personality.", {"politeness": 1.0, "head:helpful": 0.5}, 4.0
    )
    assert spec.source == str(path)
    assert spec.heads() == ["helpful"]


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 1e-1 as a string; the writer meant a number.
    path = tmp_path / "exp.yaml"
    path.write_text(GOOD.replace("politeness: 1.0", "politeness: 1e-1"))
    assert load_spec(path).weights["politeness"] == 0.1


def test_composite_arithmetic_by_hand():
    spec = PersonalitySpec("p", "d", {"head:a": 2.0, "head:b": -1.0}, 1.0)
    heads = {"a": [1.0, 0.5, 0.0], "b": [0.25, 0.5, 1.0]}
    # text 0: 2*(1-0.5) - 1*(0.25-0.5) = 1 + 0.25;  text 1: 0;  text 2: 2*(-0.5) - 1*(0.5)
    assert composite_reward(spec, ["x", "y", "z"], heads) == pytest.approx([1.25, 0.0, -1.5])
    # The "head:" prefix is accepted as the key too.
    assert composite_reward(spec, ["x"], {"head:a": [1.0], "head:b": [0.5]}) == [1.0]


def test_composite_with_attribute_terms():
    texts = ["", "Thanks so much, I really appreciate it!", "word " * 40]
    spec = PersonalitySpec("p", "d", {"concision": 3.0, "politeness": -2.0}, 1.0)
    concision, politeness = score("concision", texts), score("politeness", texts)
    expected = [
        3.0 * (c - 0.5) - 2.0 * (p - 0.5) for c, p in zip(concision, politeness, strict=True)
    ]
    assert composite_reward(spec, texts) == pytest.approx(expected)
    # "" has concision 1 and neutral politeness 0.5: exactly 3 * 0.5.
    assert composite_reward(spec, [""]) == [1.5]


def test_spreads_by_hand_and_the_composite_in_sd_units():
    spec = PersonalitySpec("p", "d", {"head:a": 2.0, "head:b": -1.0, "head:c": 0.0}, 1.0)
    heads = {"a": [0.2, 0.4, 0.6], "b": [0.5, 0.5, 0.52], "c": [0.0, 1.0, 0.0]}
    spreads = term_spreads(spec, ["x", "y", "z"], heads)
    # a: sample std of 0.2, 0.4, 0.6 is 0.2; b: std 0.0115 is below the floor; c: weight 0
    assert spreads == pytest.approx({"head:a": 0.2, "head:b": MIN_SPREAD})
    assert MIN_SPREAD == 0.1
    # text 0: 2 * (0.2 - 0.5) / 0.2 - 1 * (0.5 - 0.5) / 0.1 = -3
    # text 2: 2 * (0.6 - 0.5) / 0.2 - 1 * (0.52 - 0.5) / 0.1 = 1 - 0.2
    rewards = composite_reward(spec, ["x", "y", "z"], heads, spreads)
    assert rewards == pytest.approx([-3.0, -1.0, 0.8])
    # the same spec in score units: no spreads, the raw arithmetic
    raw = PersonalitySpec("p", "d", spec.weights, 1.0, units="score")
    assert term_spreads(raw, ["x", "y", "z"], heads) == {}
    assert composite_reward(raw, ["x"], {"a": [0.2], "b": [0.5], "c": [0.0]}) == pytest.approx(
        [-0.6]
    )


def test_one_reply_has_no_spread():
    spec = PersonalitySpec("p", "d", {"politeness": 1.0}, 1.0)
    assert term_spreads(spec, ["Thanks!"]) == {}
    assert term_spreads(spec, []) == {}


def test_units_field(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD + "units: score\n")
    assert load_spec(path).units == "score"
    path.write_text(GOOD)
    assert load_spec(path).units == "sd"


def test_zero_weight_spec_is_neutral_and_needs_no_head_scores():
    spec = PersonalitySpec("zero", "d", {"politeness": 0.0, "head:helpful": 0.0}, 1.0)
    assert composite_reward(spec, ["You idiot!", "Thank you!"]) == [0.0, 0.0]
    assert composite_reward(spec, []) == []


def test_composite_errors():
    spec = PersonalitySpec("p", "d", {"head:helpful": 1.0}, 1.0)
    with pytest.raises(InputError, match=r"head:helpful.*head_scores\['helpful'\]"):
        composite_reward(spec, ["x"])
    with pytest.raises(InputError, match="2 scores for 'head:helpful', expected one per text"):
        composite_reward(spec, ["x"], {"helpful": [0.1, 0.2]})
    with pytest.raises(InputError, match=r"score 1\.5 for 'head:helpful' is outside \[0, 1\]"):
        composite_reward(spec, ["x"], {"helpful": [1.5]})


def _error(tmp_path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message[len(str(path)) :]


def test_unknown_attribute_names_file_line_and_choices(tmp_path):
    msg = _error(tmp_path, GOOD.replace("politeness: 1.0", "politness: 1.0"))
    assert msg.startswith(":4: unknown attribute 'politness'")
    assert "politeness" in msg and "head:LABEL" in msg


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("high", "weight must be a number, got 'high'"),
        ("true", "weight must be a number, got True"),
        (".nan", "weight must be finite"),
        (".inf", "weight must be finite"),
        ("1e6", "within ±100"),
        ("[1, 2]", "weight must be a number, got [1, 2]"),
        ("", "weight must be a number, got None"),
    ],
)
def test_bad_weight(tmp_path, value, expected):
    msg = _error(tmp_path, GOOD.replace("politeness: 1.0", f"politeness: {value}"))
    assert msg.startswith(":4: field weights.politeness: ")
    assert expected in msg


@pytest.mark.parametrize("field", ["name", "description", "weights", "kl_budget"])
def test_missing_field(tmp_path, field):
    lines = GOOD.splitlines()
    keep = []
    skipping = False
    for line in lines:
        if line.startswith(f"{field}:"):
            skipping = True
            continue
        if skipping and line.startswith("  "):
            continue
        skipping = False
        keep.append(line)
    msg = _error(tmp_path, "\n".join(keep) + "\n")
    assert msg == f": missing field {field!r}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD + "temperature: 1\n", ":7: unknown field 'temperature'"),
        (GOOD.replace("kl_budget: 4", "kl_budget: -1"), ":6: field 'kl_budget' must be a positive"),
        (GOOD.replace("kl_budget: 4", "kl_budget: lots"), ":6: field 'kl_budget' must be a pos"),
        (GOOD.replace("name: test", "name: ''"), ":1: field 'name' must be a non-empty string"),
        (GOOD.replace("description: A test personality.", "description: [1]"), ":2: field 'desc"),
        ("name: x\ndescription: d\nweights: {}\nkl_budget: 1\n", ":3: field 'weights' must be a"),
        ("name: x\ndescription: d\nweights: [politeness]\nkl_budget: 1\n", ":3: field 'weig"),
        (GOOD.replace("head:helpful", "head:"), ":5: 'head:': expected head:LABEL"),
        (GOOD + "units: stddev\n", ":7: field 'units' must be sd or score, got 'stddev'"),
        (GOOD + "units: [sd]\n", ":7: field 'units' must be sd or score"),
        (GOOD.replace("head:helpful", "rm:some/dir#x"), ":5: 'rm:some/dir#x': expected rm:PATH"),
        ("name: [unclosed\n", ":2: not valid YAML"),
        ("- a\n- b\n", ": expected a mapping with fields name, description, weights, kl_budget"),
        ("", ": expected a mapping with fields name, description, weights, kl_budget, got an"),
    ],
)
def test_other_validation_errors(tmp_path, text, expected):
    assert _error(tmp_path, text).startswith(expected)


def test_missing_spec_file_and_unknown_builtin(tmp_path):
    with pytest.raises(InputError, match=r"nope\.yaml: no such spec file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="no such spec file or built-in spec; built-in specs are"):
        load_spec("grumpy")
    with pytest.raises(InputError, match="is a directory"):
        load_spec(tmp_path)
    bad = tmp_path / "binary.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not UTF-8"):
        load_spec(bad)


def test_parse_spec_names_its_source():
    with pytest.raises(InputError, match=r"^inline:1: field 'name'"):
        parse_spec(GOOD.replace("name: test", "name: 3"), source="inline")
