"""XSTest: prompts that look unsafe but are safe (and unsafe contrasts), with human-labelled
model completions.

``xstest_prompts.csv`` (``id, prompt, type, label, focus, note``) gives labelled prompts:
examples with an empty completion and ``labels = {"label": "safe"|"unsafe", "type": ...}``.
``xstest_v2_completions_<model>.csv`` gives completions that two annotators labelled:
``labels = {"annotation_1", "annotation_2", "final_label"}`` (1_full_compliance,
2_full_refusal, 3_partial_refusal).

Example::

    prompts = list(prompt_examples(Path("xstest_prompts.csv")))   # 450: 250 safe, 200 unsafe
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from rlhfkit.data.conversation import checked_example
from rlhfkit.data.files import iter_csv_rows
from rlhfkit.data.records import Example
from rlhfkit.errors import InputError

PROMPT_COLUMNS = ("id", "prompt", "type", "label")
COMPLETION_COLUMNS = ("id", "prompt", "completion", "annotation_1", "annotation_2", "final_label")
PROMPT_LABELS = ("safe", "unsafe")
COMPLETION_LABELS = ("1_full_compliance", "2_full_refusal", "3_partial_refusal")


def prompt_examples(path: Path) -> Iterator[Example]:
    """Each labelled prompt as an Example with completion ``""``."""
    for line, row in _rows(path, PROMPT_COLUMNS):
        where = f"{path}:{line}"
        if row["label"] not in PROMPT_LABELS:
            raise InputError(
                f"{where}: label is {row['label']!r}; expected one of {', '.join(PROMPT_LABELS)}"
            )
        example = Example(
            prompt=[{"role": "user", "content": row["prompt"]}],
            completion="",
            labels={"label": row["label"], "type": row["type"]},
            item_id=row["id"],
            source=where,
            meta={k: v for k, v in row.items() if k not in PROMPT_COLUMNS},
        )
        yield checked_example(example, where)


def completion_examples(path: Path) -> Iterator[Example]:
    """Each annotated completion as an Example; ``meta["model"]`` comes from the file name."""
    match = re.search(r"completions_(.+?)\.csv", path.name)
    model = match.group(1) if match else None
    for line, row in _rows(path, COMPLETION_COLUMNS):
        where = f"{path}:{line}"
        labels = {k: row[k] for k in ("annotation_1", "annotation_2", "final_label")}
        for key, value in labels.items():
            if value not in COMPLETION_LABELS:
                raise InputError(
                    f"{where}: {key} is {value!r}; expected one of {', '.join(COMPLETION_LABELS)}"
                )
        example = Example(
            prompt=[{"role": "user", "content": row["prompt"]}],
            completion=row["completion"],
            labels=labels,
            item_id=row["id"],
            source=where,
            meta={"model": model, **{k: v for k, v in row.items() if k not in COMPLETION_COLUMNS}},
        )
        yield checked_example(example, where)


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    rows = iter_csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise InputError(f"{path}:2: no data rows after the header; expected records")
    missing = [c for c in columns if c not in first[1]]
    if missing:
        raise InputError(
            f"{path}:1: header has no column {', '.join(missing)}; expected columns "
            f"{', '.join(columns)} (found: {', '.join(first[1])})"
        )
    yield first
    yield from rows
