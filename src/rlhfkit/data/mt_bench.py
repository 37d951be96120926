"""MT-Bench questions (``question.jsonl``): held-out prompts, the first user turn of each.

Each line ``{"question_id", "category", "turns": [first, second], "reference"?: [...]}`` gives
one example: the first turn is the prompt; the completion is the first reference answer where
the question has one (math, reasoning, coding) and empty otherwise. The second turn depends on
the model's first reply, so it stays in ``meta["turns"]`` and is not a prompt of its own.

Example::

    prompts = read_prompts("question.jsonl")   # the 80 first turns
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rlhfkit.data.conversation import checked_example, instruction_prompt
from rlhfkit.data.files import iter_json_lines, json_type
from rlhfkit.data.records import Example
from rlhfkit.errors import InputError


def examples(path: Path) -> Iterator[Example]:
    """One checked example per question: its first turn, and its reference answer if any."""
    for line, question in iter_json_lines(path):
        where = f"{path}:{line}"
        turns = question.get("turns")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise InputError(
                f"{where}: expected 'turns', a non-empty list of strings (the user's turns);"
                f" got {json_type(turns) if 'turns' in question else 'no turns'}"
            )
        reference = question.get("reference")
        if reference is not None and not (
            isinstance(reference, list) and all(isinstance(r, str) for r in reference)
        ):
            raise InputError(
                f"{where}: reference is a {json_type(reference)}; expected a list of strings"
            )
        example = Example(
            prompt=instruction_prompt(turns[0], ""),
            completion=reference[0] if reference else "",
            item_id=str(question.get("question_id", line)),
            source=where,
            meta={"category": question.get("category"), "turns": turns},
        )
        yield checked_example(example, where)
