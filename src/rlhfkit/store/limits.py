"""Size limits on every piece of text the platform stores, and the checks that enforce them.

Model outputs, prompts and comments are shown to other people, so they are bounded here once
(the web layer mirrors the same numbers in its request schemas).
"""

from __future__ import annotations

from typing import Any

from rlhfkit.errors import InputError

USERNAME = 64
PASSWORD = 256
NAME = 200
INSTRUCTIONS = 20_000
MESSAGE = 20_000
MESSAGES = 64
RESPONSE = 20_000
DEMONSTRATION = 20_000
COMMENT = 2_000
LABEL = 64
LABELS = 32
PROFILE = 100
CLIENT_KEY = 64
NOTE = 500
SOURCE = 500
MODEL = 200
ROLES_IN_PROMPT = ("system", "user", "assistant")


def text(
    value: Any, field: str, limit: int, *, required: bool = True, allow_empty: bool = False
) -> str | None:
    """``value`` as a string within ``limit`` characters, or InputError naming ``field``.

    ``allow_empty``: an empty string is a value (a model may well reply with nothing)."""
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise InputError(f"{field}: required, expected text of at most {limit} characters")
        return None
    if not isinstance(value, str):
        raise InputError(f"{field}: expected text, got {type(value).__name__}")
    if required and not allow_empty and not value.strip():
        raise InputError(f"{field}: must not be empty")
    if len(value) > limit:
        raise InputError(f"{field}: {len(value)} characters, at most {limit} allowed")
    if "\x00" in value:
        raise InputError(f"{field}: contains a NUL character")
    if not is_storable(value):
        raise InputError(f"{field}: not valid Unicode text (lone surrogate)")
    return value


def messages(value: Any, field: str = "prompt") -> list[dict[str, str]]:
    """A conversation: a plain string becomes one user turn; a list must hold role/content."""
    if isinstance(value, str):
        return [{"role": "user", "content": text(value, field, MESSAGE)}]  # type: ignore[dict-item]
    if not isinstance(value, list) or not value:
        raise InputError(f"{field}: expected text or a non-empty list of {{role, content}}")
    if len(value) > MESSAGES:
        raise InputError(f"{field}: {len(value)} messages, at most {MESSAGES} allowed")
    out = []
    for i, msg in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(msg, dict) or set(msg) - {"role", "content"}:
            raise InputError(f"{where}: expected an object with keys role and content")
        role = msg.get("role")
        if role not in ROLES_IN_PROMPT:
            raise InputError(f"{where}.role: expected one of {', '.join(ROLES_IN_PROMPT)}")
        out.append({"role": role, "content": text(msg.get("content"), f"{where}.content", MESSAGE)})
    return out  # type: ignore[return-value]


def label_set(value: Any, field: str = "label_set") -> list[str]:
    """A list of distinct, short label names."""
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InputError(f"{field}: expected a list of label names")
    names = [x.strip() for x in value if x.strip()]
    if len(names) > LABELS:
        raise InputError(f"{field}: {len(names)} labels, at most {LABELS} allowed")
    if len(set(names)) != len(names):
        raise InputError(f"{field}: label names must be distinct")
    for name in names:
        text(name, f"{field} entry", LABEL)
    return names


def is_storable(value: str) -> bool:
    """True when both backends can store ``value`` (UTF-8 encodable, no NUL)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value
