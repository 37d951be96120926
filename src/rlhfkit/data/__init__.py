"""Dataset formats: read preference and demonstration data, check it, write TRL JSON lines.

Readers yield the two record types of :mod:`rlhfkit.data.records`: :class:`PreferencePair`
(preferences) and :class:`Example` (demonstrations, unpaired feedback, labelled prompts).
Formats: ``trl`` (prompt/chosen/rejected, prompt/completion[/label], messages; JSON lines,
JSON array or Parquet), ``hh`` (HH-RLHF dialogues), ``oasst`` (OpenAssistant trees),
``pandalm`` (three human votes per item), ``xstest-prompts``, ``xstest-completions``,
``self-instruct``, ``mt-bench`` (MT-Bench questions: first turns as prompts). Bad input raises :class:`~rlhfkit.errors.InputError` ``PATH:LINE: ...``.

Example::

    from rlhfkit.data import convert, read_preferences

    pairs = read_preferences("harmless-base-dev.jsonl.gz")      # format detected: hh
    convert("harmless-base-dev.jsonl.gz", "hh.jsonl")            # TRL conversational jsonl
    assert read_preferences("hh.jsonl") == pairs
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any

from rlhfkit.data.files import check_readable
from rlhfkit.data.formats import (
    EXAMPLES,
    FORMATS,
    KINDS,
    PREFERENCES,
    default_kind,
    detect_format,
    get_format,
)
from rlhfkit.data.records import Example, Message, PreferencePair
from rlhfkit.data.trl import example_record, pair_record
from rlhfkit.data.writer import write_jsonl
from rlhfkit.errors import InputError

__all__ = [
    "FORMATS",
    "Example",
    "Message",
    "PreferencePair",
    "convert",
    "detect_format",
    "read_examples",
    "read_preferences",
    "validate",
    "write_examples_jsonl",
    "write_preferences_jsonl",
]

StrPath = str | PathLike[str]


def read_preferences(path: StrPath, format: str | None = None) -> list[PreferencePair]:
    """Every preference pair in ``path`` (format detected from the content when None).

    Example::

        pairs = read_preferences("testset-v1.json", format="pandalm")   # 2997 votes
    """
    return _read(Path(path), format, PREFERENCES)


def read_examples(path: StrPath, format: str | None = None) -> list[Example]:
    """Every demonstration / unpaired-feedback / labelled-prompt example in ``path``.

    Example::

        demos = read_examples("en_100_message.jsonl")   # OASST rank-0 replies
    """
    return _read(Path(path), format, EXAMPLES)


def _read(path: Path, format: str | None, kind: str) -> list[Any]:
    path, name = _resolve(path, format)
    reader = get_format(name).reader(kind)
    if reader is None:
        other = PREFERENCES if kind == EXAMPLES else EXAMPLES
        raise InputError(
            f"{path}: format {name} holds {other}, not {kind}; expected read_{other} "
            f"(--kind {other})"
        )
    return list(reader(path))


def _resolve(path: Path, format: str | None) -> tuple[Path, str]:
    if format is not None:
        get_format(format)  # an unknown name fails before the file is touched
    path = check_readable(path)
    return path, format or detect_format(path)


def write_preferences_jsonl(pairs: Iterable[PreferencePair], path: StrPath) -> int:
    """Write pairs as TRL conversational JSON lines (atomically); returns the count.

    Each line: ``prompt`` (messages), ``chosen`` / ``rejected`` (one assistant message),
    ``rater_id``, ``labels``, ``margin``, ``tie``, ``item_id``, ``source``, ``meta``.

    Example::

        write_preferences_jsonl(read_preferences("dev.jsonl.gz"), "pairs.jsonl")
    """
    return write_jsonl(Path(path), (pair_record(_typed(p, PreferencePair)) for p in pairs))


def write_examples_jsonl(examples: Iterable[Example], path: StrPath) -> int:
    """Write examples as TRL conversational prompt/completion(/label) JSON lines; returns the
    count. Each line also carries ``rater_id``, ``labels``, ``item_id``, ``source``, ``meta``.

    Example::

        write_examples_jsonl(read_examples("seed_tasks.jsonl"), "sft.jsonl")
    """
    return write_jsonl(Path(path), (example_record(_typed(e, Example)) for e in examples))


def _typed(record: Any, cls: type) -> Any:
    if not isinstance(record, cls):
        raise TypeError(f"expected {cls.__name__}, got {type(record).__name__}")
    return record


def validate(path: StrPath, format: str | None = None, kind: str | None = None) -> dict[str, Any]:
    """Read and check every record; a summary dict, or InputError at the first bad one.

    Example::

        >>> validate("harmless-base-dev.jsonl.gz")
        {'path': '...', 'format': 'hh', 'kind': 'preferences', 'records': 1800, ...}
    """
    path, name, kind = _resolve_kind(Path(path), format, kind)
    records = _read(path, name, kind)
    summary: dict[str, Any] = {
        "path": str(path),
        "format": name,
        "kind": kind,
        "records": len(records),
    }
    if kind == PREFERENCES:
        summary["ties"] = sum(p.tie for p in records)
        summary["empty_responses"] = sum(
            not p.chosen.strip() or not p.rejected.strip() for p in records
        )
    else:
        summary["labelled"] = sum(e.label is not None for e in records)
        summary["empty_completions"] = sum(not e.completion.strip() for e in records)
    summary["items"] = len({r.item_id for r in records if r.item_id is not None})
    summary["raters"] = len({r.rater_id for r in records if r.rater_id is not None})
    return summary


def convert(
    path: StrPath, out: StrPath, format: str | None = None, kind: str | None = None
) -> dict[str, Any]:
    """Read ``path`` and write its records to ``out`` as TRL JSON lines; a summary dict.

    Everything is read and checked before ``out`` is replaced (atomically), so a bad input
    leaves no output file behind.

    Example::

        convert("testset-v1.json", "pandalm.jsonl")   # {'records': 2997, 'kind': 'preferences', ...}
    """
    path, name, kind = _resolve_kind(Path(path), format, kind)
    records = _read(path, name, kind)
    write = write_preferences_jsonl if kind == PREFERENCES else write_examples_jsonl
    count = write(records, out)
    return {"path": str(path), "out": str(out), "format": name, "kind": kind, "records": count}


def _resolve_kind(path: Path, format: str | None, kind: str | None) -> tuple[Path, str, str]:
    if kind is not None and kind not in KINDS:
        raise InputError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    path, name = _resolve(path, format)
    return path, name, kind or default_kind(path, name)
