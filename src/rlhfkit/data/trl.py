"""TRL-style records: reading every variant, writing the one conversational form.

Accepted, one record per JSON line, as a JSON array, or as Parquet rows:

- preferences, explicit prompt: ``{"prompt", "chosen", "rejected"}``, each plain text or a list
  of ``{"role", "content"}`` messages (``chosen`` may repeat the prompt before the reply, as
  UltraFeedback does);
- preferences, implicit prompt: ``{"chosen", "rejected"}`` as whole conversations; the shared
  leading messages are the prompt;
- unpaired feedback: ``{"prompt", "completion", "label"}`` (label true/false);
- demonstrations: ``{"prompt", "completion"}`` or ``{"messages"}`` (the last message is the
  assistant's reply).

Provenance keys (``rater_id``, ``labels``, ``margin``, ``tie``, ``item_id``, ``source``,
``meta``) are read when present; any other key is kept in ``meta``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhfkit.data.conversation import (
    checked_example,
    checked_pair,
    parse_messages,
    text_field,
)
from rlhfkit.data.files import (
    head_bytes,
    iter_json_array,
    iter_json_lines,
    iter_parquet_rows,
    json_type,
)
from rlhfkit.data.records import Example, Message, PreferencePair
from rlhfkit.errors import InputError

PAIR_KEYS = ("prompt", "chosen", "rejected")
EXAMPLE_KEYS = ("prompt", "completion", "label")
PROVENANCE_KEYS = ("rater_id", "labels", "margin", "tie", "item_id", "source", "meta")


def iter_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, record)`` from JSON lines, a JSON array or Parquet, sniffed from the content."""
    head = head_bytes(path, 64)
    if head.startswith(b"PAR1"):
        yield from iter_parquet_rows(path)
        return
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        for line, obj in iter_json_array(path):
            if not isinstance(obj, dict):
                raise InputError(
                    f"{path}:{line}: array element is a {json_type(obj)}; expected a JSON object"
                )
            yield line, obj
        return
    yield from iter_json_lines(path)


def record_kind(obj: dict[str, Any], where: str) -> str:
    """``"preferences"`` or ``"examples"`` from a record's keys, or an InputError."""
    if "chosen" in obj or "rejected" in obj:
        return "preferences"
    if "completion" in obj or "messages" in obj:
        return "examples"
    raise InputError(
        f"{where}: record has keys {_keys(obj)}; expected prompt/chosen/rejected (preferences), "
        "prompt/completion[/label] or messages (examples)"
    )


def preferences(path: Path) -> Iterator[PreferencePair]:
    """Every preference record of a TRL file, checked."""
    for line, obj in iter_records(path):
        where = f"{path}:{line}"
        _expect_kind(obj, where, "preferences")
        yield parse_pair(obj, where)


def examples(path: Path) -> Iterator[Example]:
    """Every demonstration or unpaired-feedback record of a TRL file, checked."""
    for line, obj in iter_records(path):
        where = f"{path}:{line}"
        _expect_kind(obj, where, "examples")
        yield parse_example(obj, where)


def _expect_kind(obj: dict[str, Any], where: str, kind: str) -> None:
    found = record_kind(obj, where)
    if found != kind:
        raise InputError(
            f"{where}: this is a record of {found} (keys {_keys(obj)}); expected {kind}"
            f" (choose --kind {found} / read_{found})"
        )


def parse_pair(obj: dict[str, Any], where: str) -> PreferencePair:
    """One preference record (any TRL variant) as a checked PreferencePair."""
    for key in ("chosen", "rejected"):
        if key not in obj:
            raise InputError(
                f"{where}: missing key {key!r}; expected prompt, chosen, rejected "
                f"(keys found: {_keys(obj)})"
            )
    prompt = _prompt(obj, where) if "prompt" in obj else None
    chosen_raw, rejected_raw = obj["chosen"], obj["rejected"]
    if isinstance(chosen_raw, str) and isinstance(rejected_raw, str):
        if prompt is None:
            raise InputError(
                f"{where}: no prompt key and chosen/rejected are plain text; expected a prompt "
                "key, or chosen/rejected as message lists (or --format hh for HH dialogues)"
            )
        chosen, rejected = chosen_raw, rejected_raw
    elif isinstance(chosen_raw, list) and isinstance(rejected_raw, list):
        prompt, chosen, rejected = split_replies(
            prompt,
            parse_messages(chosen_raw, where, "chosen"),
            parse_messages(rejected_raw, where, "rejected"),
            where,
        )
    else:
        raise InputError(
            f"{where}: chosen is a {json_type(chosen_raw)} and rejected a "
            f"{json_type(rejected_raw)}; expected both strings or both message lists"
        )
    extra = _provenance(obj, where, PAIR_KEYS)
    margin = obj.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
        raise InputError(f"{where}: margin is a {json_type(margin)}; expected a number or null")
    tie = obj.get("tie", False)
    if not isinstance(tie, bool):
        raise InputError(f"{where}: tie is a {json_type(tie)}; expected true or false")
    pair = PreferencePair(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        margin=None if margin is None else float(margin),
        tie=tie,
        **extra,
    )
    return checked_pair(pair, where)


def parse_example(obj: dict[str, Any], where: str) -> Example:
    """One demonstration / unpaired-feedback record as a checked Example."""
    if "completion" not in obj:
        messages = parse_messages(obj["messages"], where, "messages")
        if not messages or messages[-1]["role"] != "assistant":
            raise InputError(
                f"{where}: messages must end with the assistant's reply; expected "
                '[..., {"role": "user", ...}, {"role": "assistant", ...}]'
            )
        prompt, completion = messages[:-1], messages[-1]["content"]
        known: tuple[str, ...] = ("messages", "label")
    else:
        if "prompt" not in obj:
            raise InputError(
                f"{where}: missing key 'prompt'; expected prompt, completion[, label] "
                f"(keys found: {_keys(obj)})"
            )
        prompt = _prompt(obj, where)
        raw = obj["completion"]
        if isinstance(raw, list):
            replies = parse_messages(raw, where, "completion")
            if not replies or any(m["role"] != "assistant" for m in replies):
                raise InputError(
                    f"{where}: completion must be assistant messages only; expected "
                    '[{"role": "assistant", "content": ...}]'
                )
            completion = "\n\n".join(m["content"] for m in replies)
        else:
            completion = text_field(raw, where, "completion")
        known = EXAMPLE_KEYS
    label = obj.get("label")
    example = Example(
        prompt=prompt, completion=completion, label=label, **_provenance(obj, where, known)
    )
    return checked_example(example, where)


def split_replies(
    prompt: list[Message] | None,
    chosen: list[Message],
    rejected: list[Message],
    where: str,
) -> tuple[list[Message], str, str]:
    """(prompt, chosen reply, rejected reply) from two conversations.

    With an explicit ``prompt`` a repeated copy of it at the start of the conversations is
    dropped; without one, the shared leading messages up to the last non-assistant turn are the
    prompt. What is left of each must be assistant turns (joined by a blank line).
    """
    if prompt is None:
        k = 0
        while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
            k += 1
        while k > 0 and chosen[k - 1]["role"] == "assistant":
            k -= 1
        prompt, chosen, rejected = chosen[:k], chosen[k:], rejected[k:]
    elif chosen[: len(prompt)] == prompt and rejected[: len(prompt)] == prompt:
        chosen, rejected = chosen[len(prompt) :], rejected[len(prompt) :]
    replies = []
    for name, rest in (("chosen", chosen), ("rejected", rejected)):
        if not rest:
            raise InputError(f"{where}: {name} has no assistant reply after the prompt")
        if any(m["role"] != "assistant" for m in rest):
            raise InputError(
                f"{where}: {name} continues with a non-assistant message after the shared "
                "prompt; expected only the assistant's reply"
            )
        replies.append("\n\n".join(m["content"] for m in rest))
    return prompt, replies[0], replies[1]


def _prompt(obj: dict[str, Any], where: str) -> list[Message]:
    raw = obj["prompt"]
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if isinstance(raw, list):
        return parse_messages(raw, where, "prompt")
    raise InputError(
        f"{where}: prompt is a {json_type(raw)}; expected a string or a list of messages"
    )


def _provenance(obj: dict[str, Any], where: str, known: tuple[str, ...]) -> dict[str, Any]:
    """rater_id, labels, item_id, source and meta (unknown keys join meta)."""
    out: dict[str, Any] = {}
    for key in ("rater_id", "item_id"):
        value = obj.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise InputError(f"{where}: {key} is a {json_type(value)}; expected a string or null")
        out[key] = None if value is None else str(value)
    for key in ("labels", "meta"):
        value = obj.get(key)
        if value is not None and not isinstance(value, dict):
            raise InputError(f"{where}: {key} is a {json_type(value)}; expected an object")
        out[key] = dict(value or {})
    source = obj.get("source", where)
    if source is not None and not isinstance(source, str):
        raise InputError(f"{where}: source is a {json_type(source)}; expected a string or null")
    out["source"] = source
    unknown = {k: v for k, v in obj.items() if k not in known and k not in PROVENANCE_KEYS}
    out["meta"] = {**unknown, **out["meta"]}
    return out


def _keys(obj: dict[str, Any]) -> str:
    return ", ".join(map(str, obj)) or "none"


# Empty ``labels`` / ``meta`` are written as null: an all-empty object column becomes an Arrow
# struct with no fields, which Parquet (and so ``push_to_hub``) cannot store.


def pair_record(pair: PreferencePair) -> dict[str, Any]:
    """The JSON object written for a pair: TRL's conversational preference format."""
    return {
        "prompt": [{"role": m["role"], "content": m["content"]} for m in pair.prompt],
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
        "rater_id": pair.rater_id,
        "labels": pair.labels or None,
        "margin": None if pair.margin is None else float(pair.margin),
        "tie": bool(pair.tie),
        "item_id": pair.item_id,
        "source": pair.source,
        "meta": pair.meta or None,
    }


def example_record(example: Example) -> dict[str, Any]:
    """The JSON object written for an example: TRL's conversational prompt-completion form."""
    return {
        "prompt": [{"role": m["role"], "content": m["content"]} for m in example.prompt],
        "completion": [{"role": "assistant", "content": example.completion}],
        "label": example.label,
        "rater_id": example.rater_id,
        "labels": example.labels or None,
        "item_id": example.item_id,
        "source": example.source,
        "meta": example.meta or None,
    }
