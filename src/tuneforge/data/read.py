"""Open a data file and yield (row, Location) pairs: JSON, JSONL, TXT, CSV, Parquet.

Every failure names the file and the 1-based line (for a JSON array, the element's index and
the line it starts on). Text is UTF-8 with or without a BOM; anything else is an error that
says where the first bad byte is.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.data.records import Location
from tuneforge.errors import DataError, NotFoundError

SUFFIX_TYPES = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".txt": "txt",
    ".csv": "csv",
    ".parquet": "parquet",
    ".ndjson": "jsonl",
}
Row = dict[str, Any]


def file_type_of(path: Path, declared: str = "auto") -> str:
    """The file type: `declared` unless auto, else from the extension."""
    if declared != "auto":
        return declared
    file_type = SUFFIX_TYPES.get(path.suffix.lower())
    if file_type is None:
        raise DataError.one(
            f"cannot tell the file type from the extension {path.suffix!r}; expected one of "
            f"{', '.join(sorted(SUFFIX_TYPES))} or an explicit file_type",
            file=str(path),
        )
    return file_type


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError("data file", str(path)) from None
    except IsADirectoryError:
        raise DataError.one("is a directory; expected a data file", file=str(path)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError.one(
            f"expected UTF-8 text, got byte 0x{raw[exc.start]:02x} at column {column}",
            file=str(path),
            line=line,
        ) from None
    if not text.strip():
        raise DataError.one(
            "the file is empty; expected at least one record", file=str(path), line=1
        )
    return text


def _json_error(path: Path, exc: json.JSONDecodeError, field: str | None = None) -> DataError:
    return DataError.one(
        f"invalid JSON: {exc.msg} (column {exc.colno})",
        file=str(path),
        line=exc.lineno,
        field=field,
    )


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_json_array(path: Path, text: str, start: int) -> Iterator[tuple[Any, Location]]:
    # json.loads gives no positions; raw_decode per element keeps the C scanner's speed and
    # tells us where each element starts.
    decoder = json.JSONDecoder()
    name = str(path)
    pos, line, counted_to, index = _skip_ws(text, start + 1), 1, 0, 0
    if pos < len(text) and text[pos] == "]":
        raise DataError.one(
            "the JSON array is empty; expected at least one record",
            file=name,
            line=text.count("\n", 0, pos) + 1,
        )
    while True:
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise _json_error(path, exc, field=f"[{index}]") from None
        yield value, Location(name, line, index)
        index += 1
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            rest = _skip_ws(text, pos + 1)
            if rest < len(text):
                raise DataError.one(
                    "unexpected text after the JSON array",
                    file=name,
                    line=text.count("\n", 0, rest) + 1,
                )
            return
        raise DataError.one(
            "invalid JSON: expected ',' or ']' after an array element",
            file=name,
            line=text.count("\n", 0, min(pos, len(text))) + 1,
            field=f"[{index}]",
        )


def _read_jsonl(path: Path, text: str) -> Iterator[tuple[Any, Location]]:
    for number, raw_line in enumerate(text.splitlines(), start=1):
        if not raw_line.strip():
            continue
        try:
            value = json.loads(raw_line)
        except json.JSONDecodeError as exc:
            raise DataError.one(
                f"invalid JSON: {exc.msg} (column {exc.colno})", file=str(path), line=number
            ) from None
        yield value, Location(str(path), number)


def _read_json(path: Path, text: str) -> Iterator[tuple[Any, Location]]:
    start = _skip_ws(text, 0)
    if text[start] == "[":
        yield from _read_json_array(path, text, start)
        return
    # A .json file may hold JSON Lines (the `datasets` json loader accepts both).
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            yield from _read_jsonl(path, text)
            return
        raise _json_error(path, exc) from None
    yield value, Location(str(path), text.count("\n", 0, start) + 1)


def _read_txt(path: Path, text: str) -> Iterator[tuple[Any, Location]]:
    for number, raw_line in enumerate(text.splitlines(), start=1):
        if raw_line.strip():
            yield {"text": raw_line}, Location(str(path), number)


def _read_csv(path: Path, text: str) -> Iterator[tuple[Any, Location]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise DataError.one("no header row; expected column names", file=str(path), line=1)
    start = reader.line_num + 1
    for row in reader:
        if None in row:
            raise DataError.one(
                f"{len(row[None]) + len(reader.fieldnames)} values but "  # type: ignore[arg-type]
                f"{len(reader.fieldnames)} columns in the header",
                file=str(path),
                line=start,
            )
        yield dict(row), Location(str(path), start)
        start = reader.line_num + 1


def _read_parquet(path: Path) -> Iterator[tuple[Any, Location]]:
    import pyarrow.parquet as pq

    if not path.exists():
        raise NotFoundError("data file", str(path))
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError.one(f"not a readable Parquet file: {exc}", file=str(path)) from None
    if table.num_rows == 0:
        raise DataError.one("the file is empty; expected at least one record", file=str(path))
    # Parquet has no lines: `line` is the 1-based row number.
    for number, row in enumerate(table.to_pylist(), start=1):
        yield row, Location(str(path), number)


def read_rows(path: Path, file_type: str = "auto") -> Iterator[tuple[Any, Location]]:
    """Every record of the file with its location; txt lines come as {"text": line}."""
    kind = file_type_of(path, file_type)
    if kind == "parquet":
        yield from _read_parquet(path)
        return
    text = _decode(path)
    readers = {"json": _read_json, "jsonl": _read_jsonl, "txt": _read_txt, "csv": _read_csv}
    yield from readers[kind](path, text)
