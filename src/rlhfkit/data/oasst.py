"""OpenAssistant (OASST1) conversation trees.

Three shapes are read, one JSON object per line: a message tree as nested messages (each with
``replies``; the shape of ``en_100_message.jsonl``), a tree export (``{"message_tree_id",
"prompt": <nested root>}``), or flat messages linked by ``parent_id``.

Volunteers ranked sibling assistant replies (``rank`` 0 = best). Every two ranked siblings give
one pair (the better rank is chosen; margin = difference in rank); the prompt is the whole
conversation from the root to their parent. Rank-0 replies are demonstrations. Deleted
messages (and what hangs under them) are left out.

Example::

    pairs = list(preferences(Path("en_100_message.jsonl")))   # 754 pairs from 100 trees
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhfkit.data.conversation import checked_example, checked_pair
from rlhfkit.data.files import iter_json_lines, json_type
from rlhfkit.data.records import Example, Message, PreferencePair
from rlhfkit.errors import InputError

_ROLE = {"prompter": "user", "assistant": "assistant"}


def preferences(path: Path) -> Iterator[PreferencePair]:
    """Every ordered pair of ranked sibling assistant replies, checked."""
    for parent, history, tree_id in _walk(path):
        ranked = [
            c
            for c in parent["replies"]
            if c["role"] == "assistant" and c["rank"] is not None and not c["deleted"]
        ]
        ranked.sort(key=lambda c: c["rank"])
        for i, better in enumerate(ranked):
            for worse in ranked[i + 1 :]:
                where = f"{path}:{better['_line']}"
                pair = PreferencePair(
                    prompt=history,
                    chosen=better["text"],
                    rejected=worse["text"],
                    labels=_pair_labels(better, worse),
                    margin=float(worse["rank"] - better["rank"]),
                    tie=worse["rank"] == better["rank"],
                    item_id=parent["message_id"],
                    source=where,
                    meta={
                        "message_tree_id": tree_id,
                        "chosen_message_id": better["message_id"],
                        "rejected_message_id": worse["message_id"],
                        "chosen_rank": better["rank"],
                        "rejected_rank": worse["rank"],
                    },
                )
                yield checked_pair(pair, where)


def examples(path: Path) -> Iterator[Example]:
    """Rank-0 assistant replies as demonstrations, with the conversation that led to them."""
    for parent, history, tree_id in _walk(path):
        for child in parent["replies"]:
            if child["role"] != "assistant" or child["rank"] != 0 or child["deleted"]:
                continue
            where = f"{path}:{child['_line']}"
            example = Example(
                prompt=history,
                completion=child["text"],
                labels=_labels(child),
                item_id=child["message_id"],
                source=where,
                meta={
                    "message_tree_id": tree_id,
                    "parent_id": parent["message_id"],
                    "synthetic": child.get("synthetic"),
                    "model_name": child.get("model_name"),
                },
            )
            yield checked_example(example, where)


def _walk(path: Path) -> Iterator[tuple[dict[str, Any], list[Message], str]]:
    """(prompter message, conversation up to and including it, tree id) for every prompter
    message that is not deleted, depth first in file order."""
    for root, tree_id in _trees(path):
        # An explicit stack: real trees can be deeper than Python's recursion limit.
        stack: list[tuple[dict[str, Any], list[Message]]] = [(root, [])]
        while stack:
            node, before = stack.pop()
            if node["deleted"]:
                continue
            history = [*before, {"role": _ROLE[node["role"]], "content": node["text"]}]
            if node["role"] == "prompter":
                yield node, history, tree_id
            stack.extend((child, history) for child in reversed(node["replies"]))


def _trees(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    """Checked root messages (with nested ``replies``) and their tree ids."""
    flat: list[dict[str, Any]] = []
    for line, obj in iter_json_lines(path):
        where = f"{path}:{line}"
        if "replies" in obj:
            root = obj
        elif isinstance(obj.get("prompt"), dict):
            root = obj["prompt"]
        else:
            flat.append(_checked(obj, where, line, nested=False))
            continue
        _check_tree(root, where, line)
        yield root, str(obj.get("message_tree_id") or root["message_id"])
    if flat:
        yield from _link(path, flat)


def _check_tree(root: dict[str, Any], where: str, line: int) -> None:
    stack = [root]
    while stack:
        node = _checked(stack.pop(), where, line, nested=True)
        stack.extend(node["replies"])


def _checked(msg: Any, where: str, line: int, nested: bool) -> dict[str, Any]:
    """Check one message in place (and note its line); errors name the message."""
    if not isinstance(msg, dict):
        raise InputError(f"{where}: a message is a {json_type(msg)}; expected an object")
    required = ("message_id", "text", "role") + (("replies",) if nested else ("parent_id",))
    missing = [k for k in required if k not in msg]
    if missing:
        raise InputError(
            f"{where}: message has no {', '.join(missing)}; expected OASST message keys "
            f"{', '.join(required)} (keys found: {', '.join(map(str, msg)) or 'none'})"
        )
    name = f"message {msg['message_id']!r}"
    if not isinstance(msg["message_id"], str):
        raise InputError(
            f"{where}: message_id is a {json_type(msg['message_id'])}; expected a string"
        )
    if msg["role"] not in _ROLE:
        raise InputError(
            f"{where}: {name} has role {msg['role']!r}; expected prompter or assistant"
        )
    if not isinstance(msg["text"], str):
        raise InputError(f"{where}: {name} text is a {json_type(msg['text'])}; expected a string")
    rank = msg.setdefault("rank", None)
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, float))):
        raise InputError(f"{where}: {name} rank is a {json_type(rank)}; expected a number or null")
    if not isinstance(msg.setdefault("deleted", False), bool):
        raise InputError(f"{where}: {name} deleted is not true/false")
    if nested and not isinstance(msg["replies"], list):
        raise InputError(
            f"{where}: {name} replies is a {json_type(msg['replies'])}; expected a list"
        )
    msg.setdefault("replies", [])
    msg["_line"] = line
    return msg


def _link(path: Path, flat: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str]]:
    """Nest flat messages under their parents; a parent that is missing is an error."""
    by_id = {m["message_id"]: m for m in flat}
    roots = []
    for msg in flat:
        parent_id = msg["parent_id"]
        if parent_id is None:
            roots.append(msg)
        elif parent_id in by_id:
            by_id[parent_id]["replies"].append(msg)
        else:
            raise InputError(
                f"{path}:{msg['_line']}: parent_id {parent_id!r} is not in the file; expected "
                "every message's parent to be present"
            )
    for root in roots:
        yield root, str(root.get("message_tree_id") or root["message_id"])


def _labels(msg: dict[str, Any]) -> dict[str, Any]:
    """OASST quality labels as {name: value}, from either export's layout."""
    raw = msg.get("labels")
    if not isinstance(raw, dict):
        return {}
    if isinstance(raw.get("name"), list) and isinstance(raw.get("value"), list):
        return dict(zip(raw["name"], raw["value"], strict=False))
    return {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in raw.items()}


def _pair_labels(chosen: dict[str, Any], rejected: dict[str, Any]) -> dict[str, Any]:
    c, r = _labels(chosen), _labels(rejected)
    return {"chosen": c, "rejected": r} if c or r else {}
