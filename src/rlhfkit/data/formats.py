"""The named formats, what kind of records each holds, and telling them apart by content.

Example::

    >>> detect_format(Path("harmless-base-dev.jsonl.gz"))
    'hh'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.data import hh, mt_bench, oasst, pandalm, self_instruct, trl, xstest
from rlhfkit.data.files import check_readable, head_bytes, iter_lines
from rlhfkit.errors import InputError

PREFERENCES = "preferences"
EXAMPLES = "examples"
KINDS = (PREFERENCES, EXAMPLES)


@dataclass(frozen=True)
class Format:
    """One named format: a reader per kind of record it holds (None: it holds none)."""

    preferences: Callable[[Path], Iterator[Any]] | None = None
    examples: Callable[[Path], Iterator[Any]] | None = None

    def reader(self, kind: str) -> Callable[[Path], Iterator[Any]] | None:
        return self.preferences if kind == PREFERENCES else self.examples


FORMATS: dict[str, Format] = {
    "trl": Format(trl.preferences, trl.examples),
    "hh": Format(preferences=hh.preferences),
    "oasst": Format(oasst.preferences, oasst.examples),
    "pandalm": Format(preferences=pandalm.preferences),
    "xstest-prompts": Format(examples=xstest.prompt_examples),
    "xstest-completions": Format(examples=xstest.completion_examples),
    "self-instruct": Format(examples=self_instruct.examples),
    "mt-bench": Format(examples=mt_bench.examples),
}


def get_format(name: str) -> Format:
    """The format called ``name``, or an InputError listing the known names."""
    if name not in FORMATS:
        raise InputError(f"unknown format {name!r}; expected one of {', '.join(FORMATS)}")
    return FORMATS[name]


def default_kind(path: Path, name: str) -> str:
    """The kind read when none is asked for: the format's only kind, preferences for OASST,
    and for TRL files the kind of the first record."""
    fmt = get_format(name)
    if fmt.preferences is None:
        return EXAMPLES
    if fmt.examples is None or name == "oasst":
        return PREFERENCES
    for line, obj in trl.iter_records(path):
        return trl.record_kind(obj, f"{path}:{line}")
    raise InputError(f"{path}:1: file is empty; expected at least one record")  # pragma: no cover


def detect_format(path: Path) -> str:
    """The format name of a data file, decided from its content (not its name).

    Parquet and JSON arrays of TRL records are ``trl``; a JSON array of items with
    ``annotator1`` votes is ``pandalm``; JSON lines are told apart by the keys of the first
    record; CSV by its header.
    """
    path = check_readable(path)
    head = head_bytes(path, 65536)
    if head.startswith(b"PAR1"):
        return "trl"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not text:
        raise InputError(f"{path}:1: file is empty; expected records")
    if text.startswith("["):
        return "pandalm" if '"annotator1"' in text and '"response1"' in text else "trl"
    if text.startswith("{"):
        return _detect_json_lines(path)
    header = text.split("\n", 1)[0]
    columns = {c.strip().strip('"') for c in header.split(",")}
    if {"completion", "annotation_1", "final_label"} <= columns:
        return "xstest-completions"
    if {"prompt", "label", "type"} <= columns:
        return "xstest-prompts"
    if "\x00" in text or "\ufffd" in text:
        raise InputError(
            f"{path}:1: binary data, not a known format; expected JSON lines, a JSON array, "
            "CSV or Parquet"
        )
    raise InputError(
        f"{path}:1: cannot tell the format (starts with {text[:30]!r}); expected JSON lines, a "
        f"JSON array, XSTest CSV or Parquet, or name one of {', '.join(FORMATS)} with --format"
    )


# a record with any of these is TRL's, whatever else it carries
_TRL_KEYS = {"prompt", "messages", "chosen", "rejected", "completion", "text", "label"}


def _detect_json_lines(path: Path) -> str:
    for _, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            return "trl"  # the reader reports the broken line with its number
        if not isinstance(obj, dict):
            return "trl"
        if (
            "replies" in obj
            or isinstance(obj.get("prompt"), dict)
            or {"message_id", "role"} <= set(obj)
        ):
            return "oasst"
        if {"instruction", "instances"} <= set(obj):
            return "self-instruct"
        if "turns" in obj and not set(obj) & _TRL_KEYS:
            return "mt-bench"
        chosen = obj.get("chosen")
        if "prompt" not in obj and isinstance(chosen, str) and "Human:" in chosen:
            return "hh"
        return "trl"
    return "trl"
