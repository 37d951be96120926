"""Reading untrusted data files record by record, with ``PATH:LINE`` errors.

Every reader here streams: a JSON-lines file is read one line at a time and a line longer than
``MAX_LINE_BYTES`` is refused after reading at most that many bytes, so a 50 MB line (or a
binary file with no newlines) cannot exhaust memory. Gzip is recognised by its magic bytes,
whatever the file is called. Every failure (missing file, directory, bad UTF-8, truncated JSON,
corrupt gzip or Parquet) becomes an :class:`~rlhfkit.errors.InputError` whose message starts
with ``PATH:LINE:`` (``PATH:`` alone when the file cannot be opened at all).

Example::

    for line, obj in iter_json_lines(Path("pairs.jsonl")):
        print(line, obj["chosen"])
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rlhfkit.errors import InputError

MAX_LINE_BYTES = 16 * 1024 * 1024
"""Longest line (one JSON record, one CSV line) accepted; real records are far smaller."""

MAX_JSON_BYTES = 1024 * 1024 * 1024
"""Largest JSON-array file accepted: an array must be held whole, so it is bounded too."""

GZIP_MAGIC = b"\x1f\x8b"


class _NotJson(ValueError):
    """NaN / Infinity: Python's json accepts them, JSON (and Arrow, and datasets) does not."""


def _refuse_constant(name: str) -> None:
    raise _NotJson(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def check_readable(path: Path) -> Path:
    """``path`` as a Path, or an InputError that says why it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; expected a data file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; expected a data file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file; expected a data file")
    return path


def head_bytes(path: Path, n: int = 4096) -> bytes:
    """Up to ``n`` bytes from the start of the file, decompressed when it is gzip.

    Used to sniff the format, so a truncated gzip stream still gives what it starts with.
    """
    path = check_readable(path)
    try:
        with path.open("rb") as f:
            raw = f.read(max(n, 65536))
    except OSError as exc:
        raise InputError(
            f"{path}: cannot open ({exc.strerror}); expected a readable file"
        ) from None
    if not raw.startswith(GZIP_MAGIC):
        return raw[:n]
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, n)
    except zlib.error as exc:
        raise InputError(
            f"{path}:1: gzip data is corrupt ({exc}); expected a valid .gz file"
        ) from None


def _open_binary(path: Path) -> IO[bytes]:
    path = check_readable(path)
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise InputError(
            f"{path}: cannot open ({exc.strerror}); expected a readable file"
        ) from None
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    raw.seek(0)
    return raw


def iter_lines(path: Path, max_bytes: int | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line (without its newline), decoded as UTF-8.

    A byte-order mark on the first line is dropped. Refuses lines longer than ``max_bytes``
    without reading the rest of them, invalid UTF-8, NUL bytes, and corrupt gzip streams.
    """
    limit = MAX_LINE_BYTES if max_bytes is None else max_bytes
    lineno = 0
    with _open_binary(path) as f:
        while True:
            lineno += 1
            try:
                raw = f.readline(limit + 1)
            except (OSError, EOFError, zlib.error) as exc:
                raise InputError(
                    f"{path}:{lineno}: compressed data is corrupt or truncated ({exc}); "
                    "expected a complete gzip file"
                ) from None
            if not raw:
                return
            if len(raw) > limit and not (len(raw) == limit + 1 and raw.endswith(b"\n")):
                raise InputError(
                    f"{path}:{lineno}: line is longer than {limit} bytes; expected one record "
                    "per line (is this a binary file or a JSON array?)"
                )
            if b"\x00" in raw:
                raise InputError(
                    f"{path}:{lineno}: contains a NUL byte (binary data); expected UTF-8 text"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                    f"{exc.start + 1}); expected UTF-8 text"
                ) from None
            if lineno == 1:
                text = text.removeprefix("\ufeff")
            yield lineno, text.rstrip("\r\n")


def iter_json_lines(path: Path, max_bytes: int | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSON-lines file.

    Each record must be a JSON object. An empty file (or one of blank lines) is an error.
    """
    seen = False
    for lineno, text in iter_lines(path, max_bytes):
        if not text.strip():
            continue
        seen = True
        try:
            obj = _DECODER.decode(text)
        except _NotJson as exc:
            raise InputError(f"{path}:{lineno}: {exc}; expected plain JSON numbers") from None
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "expected one JSON object per line"
            ) from None
        except RecursionError:
            raise InputError(f"{path}:{lineno}: JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise InputError(
                f"{path}:{lineno}: a JSON {json_type(obj)}; expected one JSON object per line"
            )
        yield lineno, obj
    if not seen:
        raise InputError(f"{path}:1: file is empty; expected at least one record")


def iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, element)`` for each element of a top-level JSON array.

    Elements are decoded one at a time from the text so that each one (and each error) carries
    the line it starts on.
    """
    path = check_readable(path)
    if path.stat().st_size > MAX_JSON_BYTES:
        raise InputError(
            f"{path}:1: JSON file is larger than {MAX_JSON_BYTES} bytes; "
            "expected JSON lines (one record per line) for data this large"
        )
    with _open_binary(path) as f:
        try:
            raw = f.read(MAX_JSON_BYTES + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(
                f"{path}:1: compressed data is corrupt or truncated ({exc}); "
                "expected a complete gzip file"
            ) from None
    if len(raw) > MAX_JSON_BYTES:
        raise InputError(f"{path}:1: JSON data is larger than {MAX_JSON_BYTES} bytes")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); expected UTF-8 text"
        ) from None
    del raw
    yield from _array_elements(path, text)


def _array_elements(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    ws = " \t\r\n"

    def line_at(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in ws:
            pos += 1
        return pos

    pos = skip(0)
    if pos == len(text):
        raise InputError(f"{path}:1: file is empty; expected a JSON array of records")
    if text[pos] != "[":
        raise InputError(
            f"{path}:{line_at(pos)}: expected a JSON array of records, found {text[pos]!r}"
        )
    pos = skip(pos + 1)
    if pos < len(text) and text[pos] == "]":
        raise InputError(f"{path}:{line_at(pos)}: the array is empty; expected records")
    while True:
        if pos >= len(text):
            raise InputError(f"{path}:{line_at(pos)}: JSON ends early; expected a record or ']'")
        start_line = line_at(pos)
        try:
            obj, pos = _DECODER.raw_decode(text, pos)
        except _NotJson as exc:
            raise InputError(f"{path}:{start_line}: {exc}; expected plain JSON numbers") from None
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "expected a JSON array of records"
            ) from None
        except RecursionError:
            raise InputError(f"{path}:{start_line}: JSON nested too deeply") from None
        yield start_line, obj
        pos = skip(pos)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            if skip(pos + 1) != len(text):
                raise InputError(
                    f"{path}:{line_at(skip(pos + 1))}: text after the closing ']'; "
                    "expected the end of the file"
                )
            return
        raise InputError(
            f"{path}:{line_at(pos)}: JSON ends early or has a missing comma; "
            "expected ',' or ']' after a record"
        )


def iter_csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)`` for each data row of a CSV file with a header line.

    ``line_number`` is the line the row starts on (a quoted field may span lines). Rows with a
    different number of fields than the header are errors.
    """
    current = [0]

    def lines() -> Iterator[str]:
        for lineno, text in iter_lines(path):
            current[0] = lineno
            yield text + "\n"

    # The line limit already bounds every field; csv's own default (128 KiB) is lower.
    csv.field_size_limit(MAX_LINE_BYTES)
    reader = csv.reader(lines(), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}:1: file is empty; expected a CSV header line")
        header = [h.strip() for h in header]
        start = current[0] + 1
        for row in reader:
            if row == []:
                start = current[0] + 1
                continue
            if len(row) != len(header):
                raise InputError(
                    f"{path}:{start}: row has {len(row)} fields; expected {len(header)} "
                    f"({', '.join(header)})"
                )
            yield start, dict(zip(header, row, strict=True))
            start = current[0] + 1
    except csv.Error as exc:
        raise InputError(f"{path}:{current[0]}: malformed CSV ({exc})") from None


def iter_parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, row)`` for a Parquet file, a batch at a time (row numbers from 1)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = check_readable(path)
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}:1: not a readable Parquet file ({exc})") from None
    if parquet.metadata.num_rows == 0:
        raise InputError(f"{path}:1: the Parquet file has no rows; expected records")
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}:{row + 1}: Parquet data is corrupt ({exc})") from None


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
