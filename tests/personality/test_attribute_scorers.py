"""Each attribute scorer on hand-written cases: clear positives, clear negatives, ordering."""

from __future__ import annotations

import doctest

import pytest

import rlhfkit.personality.scorers as scorers_module
import rlhfkit.personality.spec as spec_module
from rlhfkit.errors import InputError
from rlhfkit.personality import ATTRIBUTES, score, score_all


def one(attribute: str, text: str) -> float:
    return score(attribute, [text])[0]


NEUTRAL = "The meeting is at three in the second-floor room."


def test_refusal_positive_and_negative():
    refusals = [
        "Sorry, but I can't assist with that.",
        "I'm sorry, but I cannot help with making weapons.",
        "I cannot provide instructions on how to harm someone. It is not appropriate.",
        "As an AI language model, I am not able to share personal information about people.",
        "It is not appropriate or ethical to discuss ways to hurt a child.",
    ]
    compliances = [
        "Sure! Here are three ways to kill a Python process:\n1. kill PID\n2. pkill\n3. htop",
        "Paris is the capital of France.",
        "To bake bread, mix flour, water, salt and yeast, knead, let it rise, then bake.",
        "You can't undo a git push easily, but here is how to revert the commit: git revert.",
    ]
    for text in refusals:
        assert one("refusal", text) >= 0.5, text
    for text in compliances:
        assert one("refusal", text) < 0.5, text


def test_refusal_opening_counts_more_than_a_passing_mention():
    opening = "I can't help with that. The rest of this reply is about something else entirely."
    passing = (
        "Here is how to do it. First open the file. Then save it. Note that I can't help with"
        " that part if the disk is full."
    )
    assert one("refusal", opening) > one("refusal", passing)


def test_politeness_orders_polite_neutral_rude():
    polite = "Thank you so much for asking! I'd be happy to help. Please let me know."
    rude = "Shut up, that is a STUPID question. Figure it out yourself!!"
    assert one("politeness", polite) > 0.8
    assert one("politeness", NEUTRAL) == pytest.approx(0.5)
    assert one("politeness", rude) < 0.2
    assert one("politeness", "Thanks.") < one("politeness", "Thanks, I really appreciate it!")


@pytest.mark.parametrize(
    "technical",
    [
        "Tune the PID loop, then ask the LLM; the SRE team owns the CPU and GPU.",
        "Run it with the AWS CLI over HTTP GET.",
        "Lazy evaluation and lazy loading defer work until it is needed.",
        "You can learn to code in a month.",
        "You are lazy loading the images, which is right here.",
        "Use a list, a dict or whatever.",
        "Whatever language you choose, the FNF and FSP flags stay off.",
        "Create it once:\n```sql\nCREATE TABLE IF NOT EXISTS users (id INT);\n```\nThen insert.",
        "Run `SELECT * FROM T WHERE ID IN (1, 2)` first.",
        "A fence cut off at the token limit:\n```\nDROP TABLE IF EXISTS LOGS",
    ],
)
def test_politeness_is_not_fooled_by_acronyms_or_technical_words(technical):
    """Acronyms are not shouting and "lazy evaluation" is no insult (greedy replies of the
    default model scored below neutral for these before: docs/personality.md, ninth session)."""
    assert one("politeness", technical) == pytest.approx(0.5)


def test_politeness_hears_shouting_and_addressed_insults():
    assert one("politeness", "WHY WOULD YOU ASK THAT") < 0.1  # a run of capitals
    assert one("politeness", "I HATE YOU") < 0.3  # "I" and "A" belong to a run
    assert one("politeness", "You're so lazy.") < 0.3
    assert one("politeness", "Learn to read.") < 0.3
    assert one("politeness", "Whatever. Do what you want.") < 0.3
    assert one("politeness", "Sure. Whatever!") < 0.3
    # outside the code, shouting still counts; a fence opens only at the start of a line
    assert one("politeness", "```\nx = 1\n```\nWHY WOULD YOU ASK THAT") < 0.1
    assert one("politeness", "Use ``` to open a block. WHY WOULD YOU ASK THAT") < 0.1
    # insults and curses count even inside code: a fence is no place to hide them
    assert one("politeness", "Sure!\n```\nYou are an idiot, shut up") < 0.1
    # courtesy inside code is not courtesy
    assert one("politeness", 'Here:\n```python\nprint("Hello, please")\n```') == pytest.approx(0.5)


def test_hedging():
    hedged = "Perhaps it might work, but I'm not sure; it probably depends on the setup."
    certain = "It works. This is definitely the right setup and it always works."
    assert one("hedging", hedged) > 0.8
    assert one("hedging", NEUTRAL) == 0.0
    assert one("hedging", certain) == 0.0
    some = "The tool is fast and simple and it may need a restart after the upgrade is done."
    assert 0.0 < one("hedging", some) < one("hedging", hedged)


def test_length_and_concision():
    short, medium, long = "Yes.", " ".join(["word"] * 31), " ".join(["word"] * 2000)
    assert score("length", [short, medium, long]) == pytest.approx([0.0995, 0.5, 1.0], abs=1e-3)
    assert one("concision", "") == 1.0
    lengths = score("length", [short, medium, long])
    assert score("concision", [short, medium, long]) == pytest.approx([1 - x for x in lengths])


def test_formality():
    formal = (
        "Furthermore, the committee shall convene subsequently in accordance with the"
        " regulations; therefore, attendance is mandatory."
    )
    casual = "hey lol yeah that's totally cool, gonna grab some stuff!! :)"
    assert one("formality", formal) > 0.8
    assert one("formality", casual) < 0.1
    assert one("formality", formal) > one("formality", NEUTRAL) > one("formality", casual)


def test_possessive_is_not_a_contraction():
    # "Smith's" is formal English; "it's" is a contraction.
    assert one("formality", "Mr Smith's residence remains unoccupied.") > one(
        "formality", "It's empty and it's unoccupied."
    )


def test_sentiment():
    assert one("sentiment", "I love this, it is wonderful and delightful!") > 0.85
    assert one("sentiment", "This is awful, I hate it and it is terrible.") < 0.15
    assert one("sentiment", NEUTRAL) == pytest.approx(0.5)


def test_sarcasm():
    sarcastic = "Oh great, another meeting. Just what I needed. What could possibly go wrong?"
    sincere = "The meeting was useful and we agreed on the plan for next week."
    assert one("sarcasm", sarcastic) > 0.8
    assert one("sarcasm", sincere) < 0.1
    assert one("sarcasm", "Yeah, right.") > one("sarcasm", "Yes, that is right.")


def test_formatting():
    markdown = "# Setup\n\n- one\n- two\n- three\n\n```python\nprint('hi')\n```\n"
    prose = "Install the package, then run the command, and check the output."
    three_items = "Steps:\n1. open\n2. edit\n3. save"
    assert one("formatting", markdown) > 0.9
    assert one("formatting", prose) == 0.0
    assert 0.3 < one("formatting", three_items) < one("formatting", markdown)
    assert one("formatting", "Use `git status` and **always** commit.") > 0.0


ODD_TEXTS = [
    "",
    "   \n\t ",
    "a",
    "!!!!!!!!!!",
    "ÄÖÜ ñ 漢字 🙂🙂🙂",
    "x" * 100_000,
    "word " * 20_000,
    "```\nunclosed code",
    "| a | b |\n|---|---|\n| 1 | 2 |",
]


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_every_scorer_is_bounded_and_deterministic(attribute):
    first = score(attribute, ODD_TEXTS)
    assert len(first) == len(ODD_TEXTS)
    assert all(0.0 <= x <= 1.0 for x in first), first
    assert score(attribute, ODD_TEXTS) == first
    assert score(attribute, []) == []


def test_score_all_has_every_attribute():
    profile = score_all(["Hello!", "No."])
    assert set(profile) == set(ATTRIBUTES)
    assert all(len(v) == 2 for v in profile.values())


def test_unknown_attribute_and_wrong_types():
    with pytest.raises(InputError, match="unknown attribute 'polite'.*politeness"):
        score("polite", ["x"])
    with pytest.raises(TypeError, match="list of strings"):
        score("refusal", "one string")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        score("refusal", ["ok", 3])


@pytest.mark.parametrize("module", [scorers_module, spec_module])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
