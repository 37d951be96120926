"""PandaLM's human test set (``testset-v1.json``): three annotators judged each item.

Each item has an instruction (+ input) and two responses; ``annotator1/2/3`` voted 1 (first
better), 2 (second better) or 0 (tie). Every vote becomes its own pair, so agreement between
raters can be measured: ``rater_id`` is the annotator, ``item_id`` the item, ``tie`` marks vote
0 (chosen is then response 1), and ``meta["votes"]`` keeps all three votes.

Example::

    pairs = list(preferences(Path("testset-v1.json")))   # 999 items x 3 votes = 2997 pairs
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhfkit.data.conversation import checked_pair, instruction_prompt
from rlhfkit.data.files import iter_json_array, json_type
from rlhfkit.data.records import PreferencePair
from rlhfkit.errors import InputError

ANNOTATORS = ("annotator1", "annotator2", "annotator3")
_TEXT_KEYS = ("instruction", "input", "response1", "response2")


def preferences(path: Path) -> Iterator[PreferencePair]:
    """One checked pair per annotator vote, item by item."""
    for line, item in iter_json_array(path):
        where = f"{path}:{line}"
        if not isinstance(item, dict):
            raise InputError(f"{where}: item is a {json_type(item)}; expected a JSON object")
        missing = [k for k in ("idx", *_TEXT_KEYS, *ANNOTATORS) if k not in item]
        if missing:
            raise InputError(
                f"{where}: item has no {', '.join(missing)}; expected PandaLM keys idx, "
                f"instruction, input, response1, response2, {', '.join(ANNOTATORS)}"
            )
        text, coerced = {}, []
        for key in _TEXT_KEYS:
            text[key], was_coerced = _text(item[key], where, key)
            if was_coerced:
                coerced.append(key)
        votes = {a: _vote(item[a], where, a) for a in ANNOTATORS}
        meta: dict[str, Any] = {
            "votes": votes,
            **{k: v for k, v in item.items() if k not in ("idx", *_TEXT_KEYS, *ANNOTATORS)},
        }
        if coerced:
            meta["coerced_to_text"] = coerced
        prompt = instruction_prompt(text["instruction"], text["input"])
        for annotator, vote in votes.items():
            first, second = text["response1"], text["response2"]
            chosen, rejected = (second, first) if vote == 2 else (first, second)
            pair = PreferencePair(
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                rater_id=annotator,
                tie=vote == 0,
                item_id=str(item["idx"]),
                source=where,
                meta={**meta, "votes": dict(votes)},
            )
            yield checked_pair(pair, where)


def _text(value: Any, where: str, key: str) -> tuple[str, bool]:
    # The published file has a few responses stored as JSON true (the model answered "True"):
    # keep them as the text they stand for rather than dropping real human votes.
    if isinstance(value, str):
        return value, False
    if isinstance(value, (bool, int, float)):
        return str(value), True
    raise InputError(f"{where}: {key} is a {json_type(value)}; expected a string")


def _vote(value: Any, where: str, annotator: str) -> int:
    if isinstance(value, bool) or value not in (0, 1, 2):
        raise InputError(
            f"{where}: {annotator} is {value!r}; expected 0 (tie), 1 (response1 better) or "
            "2 (response2 better)"
        )
    return int(value)
