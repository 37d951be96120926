"""Anthropic HH-RLHF: ``{"chosen", "rejected"}`` whole dialogues, one per JSON line.

Each dialogue is ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``; the two of a pair share everything
but the final Assistant turn(s). The shared turns, up to and including the last Human turn
before the two diverge, become the prompt; the Assistant turns after it are the replies (a few
real dialogues have two Assistant turns in a row; they are joined by a blank line).

Example::

    >>> split_dialogues("\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "\\n\\nHuman: Hi\\n\\nAssistant: Go away.", "x:1")
    ([{'role': 'user', 'content': 'Hi'}], 'Hello!', 'Go away.')
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from rlhfkit.data.conversation import checked_pair
from rlhfkit.data.files import iter_json_lines, json_type
from rlhfkit.data.records import Message, PreferencePair
from rlhfkit.data.trl import split_replies
from rlhfkit.errors import InputError

_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_dialogue(text: str, where: str, field: str) -> list[Message]:
    """The turns of one HH dialogue as messages (contents stripped of surrounding spaces)."""
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text  # some copies of the data drop the leading blank line
    parts = _TURN.split(text)
    if len(parts) == 1:
        raise InputError(
            f"{where}: {field} has no 'Human:' or 'Assistant:' turns; expected a dialogue "
            "like '\\n\\nHuman: ...\\n\\nAssistant: ...'"
        )
    if parts[0].strip():
        raise InputError(
            f"{where}: {field} has text before the first turn ({parts[0][:40]!r}); expected "
            "a dialogue starting with '\\n\\nHuman: '"
        )
    return [
        {"role": _ROLE[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)
    ]


def split_dialogues(chosen: str, rejected: str, where: str) -> tuple[list[Message], str, str]:
    """(prompt messages, chosen reply, rejected reply) of one HH pair."""
    turns = {}
    for field, text in (("chosen", chosen), ("rejected", rejected)):
        messages = parse_dialogue(text, where, field)
        if not any(m["role"] == "assistant" for m in messages):
            raise InputError(
                f"{where}: {field} has no Assistant turn; expected the dialogue to end with "
                "'\\n\\nAssistant: <reply>'"
            )
        turns[field] = messages
    return split_replies(None, turns["chosen"], turns["rejected"], where)


def preferences(path: Path) -> Iterator[PreferencePair]:
    """Every pair of an HH-RLHF file (.jsonl or .jsonl.gz), checked."""
    for line, obj in iter_json_lines(path):
        where = f"{path}:{line}"
        for key in ("chosen", "rejected"):
            if key not in obj:
                raise InputError(
                    f"{where}: missing key {key!r}; expected HH-RLHF keys chosen, rejected "
                    f"(keys found: {', '.join(obj) or 'none'})"
                )
            if not isinstance(obj[key], str):
                raise InputError(
                    f"{where}: {key} is a {json_type(obj[key])}; expected the whole dialogue "
                    "as a string"
                )
        prompt, chosen, rejected = split_dialogues(obj["chosen"], obj["rejected"], where)
        meta = {k: v for k, v in obj.items() if k not in ("chosen", "rejected")}
        pair = PreferencePair(prompt, chosen, rejected, source=where, meta=meta)
        yield checked_pair(pair, where)
