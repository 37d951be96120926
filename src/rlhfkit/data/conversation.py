"""Checks shared by every reader: messages, prompts, and the invariants of a pair.

``where`` is always the ``PATH:LINE`` of the record being read, so a failed check points at
the line to fix.
"""

from __future__ import annotations

from typing import Any

from rlhfkit.data.files import json_type
from rlhfkit.data.records import Example, Message, PreferencePair
from rlhfkit.errors import InputError

ROLES = ("system", "user", "assistant")


def parse_messages(value: Any, where: str, field: str) -> list[Message]:
    """A list of ``{"role", "content"}`` messages from decoded JSON, or an InputError."""
    if not isinstance(value, list):
        raise InputError(
            f"{where}: {field} is a {json_type(value)}; expected a list of "
            '{"role", "content"} messages'
        )
    messages: list[Message] = []
    for i, msg in enumerate(value):
        at = f"{field}[{i}]"
        if not isinstance(msg, dict):
            raise InputError(
                f'{where}: {at} is a {json_type(msg)}; expected a {{"role", "content"}} object'
            )
        if "role" not in msg or "content" not in msg:
            missing = [k for k in ("role", "content") if k not in msg]
            raise InputError(
                f"{where}: {at} has no {' or '.join(missing)}; expected "
                '{"role", "content"} (keys found: ' + ", ".join(map(str, msg)) + ")"
            )
        role, content = msg["role"], msg["content"]
        if role not in ROLES:
            raise InputError(f"{where}: {at}.role is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise InputError(f"{where}: {at}.content is a {json_type(content)}; expected a string")
        messages.append({"role": role, "content": content})
    return messages


def text_field(value: Any, where: str, field: str) -> str:
    """A required string field, or an InputError naming it."""
    if not isinstance(value, str):
        raise InputError(f"{where}: {field} is a {json_type(value)}; expected a string")
    return value


def instruction_prompt(instruction: str, input_text: str) -> list[Message]:
    """The user turn for an instruction-following item: the instruction, then its input."""
    parts = [p.strip() for p in (instruction, input_text) if p and p.strip()]
    return [{"role": "user", "content": "\n\n".join(parts)}]


def check_prompt(prompt: list[Message], where: str) -> None:
    """A prompt is a non-empty conversation with some text that ends with the user's turn."""
    if not prompt or not any(m["content"].strip() for m in prompt):
        raise InputError(f"{where}: prompt is empty; expected the user's message")
    if prompt[-1]["role"] != "user":
        raise InputError(
            f"{where}: prompt ends with a {prompt[-1]['role']} message; expected it to end "
            "with the user's turn"
        )


def checked_pair(pair: PreferencePair, where: str) -> PreferencePair:
    """``pair`` after checking the invariants every reader promises (or an InputError)."""
    check_prompt(pair.prompt, where)
    if pair.chosen == pair.rejected:
        raise InputError(
            f"{where}: chosen and rejected are the same text; expected two different responses"
        )
    return pair


def checked_example(example: Example, where: str) -> Example:
    """``example`` after checking its prompt and label (or an InputError)."""
    check_prompt(example.prompt, where)
    if example.label is not None and not isinstance(example.label, bool):
        raise InputError(
            f"{where}: label is a {json_type(example.label)}; expected true, false or null"
        )
    return example
