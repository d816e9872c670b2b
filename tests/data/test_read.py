"""data/read.py: every file type, with locations; BOM and Chinese text intact."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tuneforge.data.read import read_rows
from tuneforge.errors import DataError


def rows(path: Path, file_type: str = "auto") -> list[tuple[object, int, int | None]]:
    return [(row, loc.line, loc.index) for row, loc in read_rows(path, file_type)]


def test_json_array_elements_carry_index_and_start_line(write) -> None:
    path = write("a.json", '[\n  {"a": 1},\n\n  {"a": "二"}\n]\n')
    assert rows(path) == [({"a": 1}, 2, 0), ({"a": "二"}, 4, 1)]


def test_json_file_holding_json_lines(write) -> None:
    path = write("a.json", '{"a": 1}\n{"a": 2}\n')
    assert rows(path) == [({"a": 1}, 1, None), ({"a": 2}, 2, None)]


def test_jsonl_skips_blank_lines_and_keeps_line_numbers(write) -> None:
    path = write("a.jsonl", '{"a": 1}\n\n{"a": 2}\n')
    assert rows(path) == [({"a": 1}, 1, None), ({"a": 2}, 3, None)]


def test_txt_one_sample_per_line_blank_lines_skipped(write) -> None:
    path = write("a.txt", "第一行\n\n  \nsecond\n")
    assert rows(path) == [({"text": "第一行"}, 1, None), ({"text": "second"}, 4, None)]


def test_csv_rows_with_header(write) -> None:
    path = write("a.csv", 'instruction,output\nhi,"multi\nline"\n你好,世界\n')
    assert rows(path) == [
        ({"instruction": "hi", "output": "multi\nline"}, 2, None),
        ({"instruction": "你好", "output": "世界"}, 4, None),
    ]


def test_parquet_rows_numbered_from_one(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["一", "two"]}), path)
    assert rows(path) == [({"text": "一"}, 1, None), ({"text": "two"}, 2, None)]


def test_utf8_bom_is_accepted(write) -> None:
    path = write("a.jsonl", None, raw='\ufeff{"text": "中文"}\n'.encode())
    assert rows(path) == [({"text": "中文"}, 1, None)]


def test_explicit_file_type_overrides_extension(write) -> None:
    path = write("a.data", '{"text": "x"}\n')
    assert rows(path, "jsonl") == [({"text": "x"}, 1, None)]


def test_unknown_extension_is_an_error(write) -> None:
    path = write("a.xml", "<a/>")
    with pytest.raises(DataError, match="file type"):
        rows(path)
