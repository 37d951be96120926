"""Writing TRL-compatible JSON lines atomically, with one type per column.

A file is written to a temporary file beside the target and renamed over it only when every
record has been written, so a failure leaves no half-written file. Hugging Face ``datasets``
loads JSON lines with Arrow, which needs each column (and each nested key) to keep one type on
every line; :class:`ColumnTypes` checks that while writing and refuses a record that would break
loading, naming its line and column.

Example::

    write_jsonl(Path("out.jsonl"), ({"prompt": "Hi", "n": i} for i in range(3)))
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlhfkit.errors import InputError


class ColumnTypes:
    """The Arrow-relevant type of every column path seen so far (numbers merge; null fits all)."""

    def __init__(self) -> None:
        self.types: Any = ("struct", {})

    def add(self, record: dict[str, Any], where: str) -> None:
        """Merge ``record``'s types in, or raise an InputError naming the conflicting column."""
        self.types = _merge(self.types, _type_of(record), where, "")


def _type_of(value: Any) -> Any:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        item: Any = "null"
        for x in value:
            item = _merge(item, _type_of(x), "", "[]")
        return ("list", item)
    if isinstance(value, dict):
        return ("struct", {str(k): _type_of(v) for k, v in value.items()})
    return type(value).__name__


def _merge(a: Any, b: Any, where: str, column: str) -> Any:
    if a == "null" or a == b:
        return b
    if b == "null":
        return a
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0]:
        if a[0] == "list":
            return ("list", _merge(a[1], b[1], where, column + "[]"))
        fields = dict(a[1])
        for key, t in b[1].items():
            fields[key] = _merge(fields.get(key, "null"), t, where, f"{column}.{key}".lstrip("."))
        return ("struct", fields)
    raise InputError(
        f"{where}: column {column or '(record)'} is a {_name(b)} here but a {_name(a)} on "
        "earlier lines; expected one type per column so that datasets can load the file"
    )


def _name(t: Any) -> str:
    return t if isinstance(t, str) else {"list": "list", "struct": "object"}[t[0]]


def check_output_path(path: Path) -> Path:
    """``path`` if a file can be written there, else an InputError naming it. Call it before
    costly work whose result goes to ``path``, so a bad path fails first."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; expected an output file path")
    if not path.parent.is_dir():
        raise InputError(
            f"{path}: folder {path.parent} does not exist; expected an existing folder"
        )
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"{path}: folder {path.parent} is not writable")
    return path


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write ``records`` as JSON lines to ``path`` atomically; returns how many were written.

    ``path`` ending in ``.gz`` is gzip-compressed. Column types are checked across lines.
    """
    path = check_output_path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot write here ({exc.strerror})") from None
    tmp = Path(tmp_name)
    count = 0
    try:
        with os.fdopen(fd, "wb") as raw:
            # mtime=0 keeps .gz output byte-identical across runs.
            out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if path.suffix == ".gz" else raw
            columns = ColumnTypes()
            for count, record in enumerate(records, start=1):
                where = f"{path}:{count}"
                columns.add(record, where)
                out.write(_dump(record, where).encode("utf-8") + b"\n")
            if out is not raw:
                out.close()
        if count == 0:
            raise InputError(f"{path}: nothing to write; expected at least one record")
        # mkstemp makes the file private (0600); give it the mode an ordinary file would have.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def _dump(record: dict[str, Any], where: str) -> str:
    try:
        line = json.dumps(record, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: record cannot be written as JSON ({exc})") from None
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (legal as a JSON \\u escape, not in UTF-8) stays escaped.
        line = json.dumps(record, ensure_ascii=True, allow_nan=False)
    return line
