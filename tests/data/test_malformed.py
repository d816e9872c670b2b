"""Malformed inputs: each error names the file, the 1-based line and the field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tuneforge.data.dataset_info import resolve_dataset
from tuneforge.data.load import read_dataset
from tuneforge.errors import DataError, Issue, NotFoundError, UnsupportedError, UserError

GOOD = {"instruction": "q", "input": "", "output": "a"}


def first_issue(path: Path, **kwargs) -> Issue:
    with pytest.raises(DataError) as info:
        read_dataset(resolve_dataset(str(path), path.parent), strict=True, **kwargs)
    return info.value.first


def info_issue(data_dir: Path, name: str) -> Issue:
    with pytest.raises(DataError) as info:
        read_dataset(resolve_dataset(name, data_dir), strict=True)
    return info.value.first


def jsonl(*rows: object) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# (file name, content, line, field, words in the message)
CASES = [
    ("broken.jsonl", '{"instruction": "q", "output": "a"}\n{"instruction": "q", "output": }\n',
     2, None, "invalid JSON"),
    ("broken.json", '[\n  {"instruction": "q", "output": "a"},\n  {"instruction": "q",\n'
     '   "output" "a"}\n]\n', 4, "[1]", "invalid JSON"),
    ("missing_sep.json", '[\n {"instruction": "q", "output": "a"}\n {"instruction": "q"}\n]\n',
     3, "[1]", "expected ','"),
    ("missing_output.jsonl", jsonl(GOOD, {"instruction": "q", "input": ""}), 2, "output",
     "missing column 'output'"),
    ("empty_output.json", json.dumps([GOOD, {"instruction": "q", "output": "  "}], indent=1),
     7, "[1].output", "non-empty response"),
    ("output_not_string.jsonl", jsonl({"instruction": "q", "output": 3}), 1, "output",
     "expected a string, got int"),
    ("instruction_not_string.jsonl", jsonl({"instruction": ["q"], "output": "a"}), 1,
     "instruction", "expected a string, got array"),
    ("empty_prompt.jsonl", jsonl({"instruction": "", "input": "", "output": "a"}), 1,
     "instruction", "non-empty instruction"),
    ("history_not_list.jsonl", jsonl({**GOOD, "history": "q1 a1"}), 1, "history",
     "list of [user, assistant] pairs"),
    ("history_not_pairs.jsonl", jsonl({**GOOD, "history": [["q1", "a1"], ["q2"]]}), 1,
     "history[1]", "pair of strings"),
    ("ranking_three.json", json.dumps([{"instruction": "q", "output": ["a", "b", "c"]}]), 1,
     "[0].output", "got 3 items"),
    ("ranking_empty_side.jsonl", jsonl({"instruction": "q", "output": ["a", ""]}), 1,
     "output[1]", "non-empty"),
    ("sharegpt_bad_role.jsonl", jsonl({"conversations": [
        {"from": "human", "value": "q"}, {"from": "human", "value": "again"}]}), 1,
     "conversations[1].from", "expected 'gpt' or 'function_call'"),
    ("sharegpt_odd_count.jsonl", jsonl({"conversations": [
        {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},
        {"from": "human", "value": "q2"}]}), 1, "conversations", "ending with an assistant"),
    ("sharegpt_missing_value.jsonl", jsonl({"conversations": [
        {"from": "human"}, {"from": "gpt", "value": "a"}]}), 1, "conversations[0].value",
     "missing key 'value'"),
    ("sharegpt_not_list.jsonl", jsonl({"conversations": "hello"}), 1, "conversations",
     "list of messages"),
    ("sharegpt_bad_function_call.jsonl", jsonl({"conversations": [
        {"from": "human", "value": "q"}, {"from": "function_call", "value": "not json"},
        {"from": "observation", "value": "o"}, {"from": "gpt", "value": "a"}]}), 1,
     "conversations[1]", "JSON function call"),
    ("openai_bad_role.jsonl", jsonl({"messages": [
        {"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}), 1,
     "messages[1].role", "expected one of system/user/assistant/tool, got 'bot'"),
    ("openai_ends_with_user.jsonl", jsonl({"messages": [
        {"role": "user", "content": "q"}]}), 1, "messages", "end with an assistant"),
    ("openai_bad_weight.jsonl", jsonl({"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]}),
     1, "messages[1].weight", "expected 0 or 1"),
    ("openai_weight_on_user.jsonl", jsonl({"messages": [
        {"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]}),
     1, "messages[0].weight", "only on assistant"),
    ("openai_late_system.jsonl", jsonl({"messages": [
        {"role": "user", "content": "q"}, {"role": "system", "content": "s"},
        {"role": "assistant", "content": "a"}]}), 1, "messages[1].role", "first message"),
    ("openai_bad_tool_call.jsonl", jsonl({"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function"}]}]}), 1,
     "messages[1].tool_calls[0]", "function"),
    ("dpo_two_outputs.jsonl", jsonl({"input": {"messages": [{"role": "user", "content": "q"}]},
                                     "preferred_output": [], "non_preferred_output": []}), 1,
     "preferred_output", "list of one assistant message"),
    ("kto_tag_not_bool.jsonl", jsonl({**GOOD, "kto_tag": "yes"}), 1, "kto_tag",
     "expected true or false"),
    ("embedding_no_pos.jsonl", jsonl({"query": "q", "pos": [], "neg": []}), 1, "pos",
     "at least one passage"),
    ("embedding_neg_not_strings.jsonl", jsonl({"query": "q", "pos": ["p"], "neg": [1]}), 1,
     "neg[0]", "expected a string"),
    ("row_not_object.json", '[\n  {"text": "a"},\n  "just a string"\n]\n', 3, "[1]",
     "expected a JSON object"),
    ("text_empty.jsonl", jsonl({"text": "a"}, {"text": ""}), 2, "text", "non-empty text"),
]


@pytest.mark.parametrize(("name", "content", "line", "field", "words"), CASES,
                         ids=[c[0] for c in CASES])
def test_malformed_row_names_file_line_and_field(write, name, content, line, field, words):
    path = write(name, content)
    issue = first_issue(path)
    assert issue.file == str(path)
    assert issue.line == line
    assert issue.field == field
    assert words in issue.message


def test_there_are_at_least_25_malformed_cases() -> None:
    assert len(CASES) >= 25


def test_empty_file(write) -> None:
    issue = first_issue(write("empty.jsonl", "\n\n"))
    assert (issue.line, "empty" in issue.message) == (1, True)


def test_empty_json_array(write) -> None:
    issue = first_issue(write("empty.json", "[\n]\n"))
    assert "array is empty" in issue.message


def test_bad_encoding_names_the_line_of_the_bad_byte(write) -> None:
    path = write("latin.jsonl", None, raw='{"text": "ok"}\n{"text": "caf\xe9"}\n'.encode("latin-1"))
    issue = first_issue(path)
    assert (issue.file, issue.line) == (str(path), 2)
    assert "expected UTF-8" in issue.message


def test_csv_row_with_extra_cells(write) -> None:
    issue = first_issue(write("a.csv", "instruction,output\nq,a\nq,a,extra\n"))
    assert issue.line == 3
    assert "columns in the header" in issue.message


def test_uninferable_format_names_the_keys(write) -> None:
    with pytest.raises(DataError, match=r"cannot infer the dataset format from the keys \['foo'\]"):
        read_dataset(resolve_dataset(str(write("x.jsonl", jsonl({"foo": 1}))), Path(".")))


def test_nothing_left_fails_even_when_not_strict(write) -> None:
    path = write("all_bad.jsonl", jsonl({"instruction": "q"}, {"instruction": "q"}))
    with pytest.raises(DataError) as info:
        read_dataset(resolve_dataset(str(path), path.parent))
    assert "no valid samples left" in (info.value.hint or "")
    assert [i.line for i in info.value.issues] == [1, 2]


# ---- dataset_info.json entries


def make_info(tmp_path: Path, entries: dict, files: dict[str, str]) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    for name, content in files.items():
        (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / name).write_text(content)
    (data_dir / "dataset_info.json").write_text(json.dumps(entries, indent=2))
    return data_dir


def test_unknown_dataset_name_suggests_the_closest(tmp_path: Path) -> None:
    data_dir = make_info(tmp_path, {"alpaca_demo": {"file_name": "a.jsonl"}}, {})
    with pytest.raises(NotFoundError) as info:
        resolve_dataset("alpaca_dem", data_dir)
    assert "did you mean 'alpaca_demo'" in str(info.value)


def test_sha1_mismatch_names_both_hashes(tmp_path: Path) -> None:
    content = jsonl(GOOD)
    data_dir = make_info(tmp_path, {"x": {"file_name": "a.jsonl", "file_sha1": "0" * 40}},
                         {"a.jsonl": content})
    issue = info_issue(data_dir, "x")
    actual = hashlib.sha1(content.encode()).hexdigest()
    assert issue.file == str(data_dir / "dataset_info.json")
    assert (issue.line, issue.field) == (2, "x.file_sha1")
    assert "0" * 40 in issue.message and actual in issue.message


def test_matching_sha1_loads(tmp_path: Path) -> None:
    content = jsonl(GOOD)
    sha1 = hashlib.sha1(content.encode()).hexdigest()
    data_dir = make_info(tmp_path, {"x": {"file_name": "a.jsonl", "file_sha1": sha1}},
                         {"a.jsonl": content})
    assert len(read_dataset(resolve_dataset("x", data_dir)).examples) == 1


@pytest.mark.parametrize("file_name", ["../secret.jsonl", "/etc/passwd", "sub/../../x.jsonl"])
def test_file_name_escaping_the_dataset_dir_is_refused(tmp_path: Path, file_name: str) -> None:
    (tmp_path / "secret.jsonl").write_text(jsonl(GOOD))
    data_dir = make_info(tmp_path, {"x": {"file_name": file_name}}, {})
    issue = info_issue(data_dir, "x")
    assert (issue.line, issue.field) == (2, "x.file_name")
    assert "escapes the dataset directory" in issue.message


def test_unknown_entry_key_is_named(tmp_path: Path) -> None:
    data_dir = make_info(tmp_path, {"x": {"file_name": "a.jsonl", "colums": {}}},
                         {"a.jsonl": jsonl(GOOD)})
    issue = info_issue(data_dir, "x")
    assert issue.field == "x.colums"
    assert "did you mean 'columns'" in issue.message


def test_unknown_column_key_is_named(tmp_path: Path) -> None:
    data_dir = make_info(tmp_path, {"x": {"file_name": "a.jsonl", "columns": {"promt": "q"}}},
                         {"a.jsonl": jsonl(GOOD)})
    assert info_issue(data_dir, "x").field == "x.columns.promt"


def test_bad_formatting_value(tmp_path: Path) -> None:
    data_dir = make_info(tmp_path, {"x": {"file_name": "a.jsonl", "formatting": "chatml"}},
                         {"a.jsonl": jsonl(GOOD)})
    issue = info_issue(data_dir, "x")
    assert issue.field == "x.formatting"
    assert "alpaca, sharegpt, openai" in issue.message


def test_missing_data_file_names_the_entry(tmp_path: Path) -> None:
    data_dir = make_info(tmp_path, {"x": {"file_name": "nope.jsonl"}}, {})
    with pytest.raises(NotFoundError, match="nope.jsonl") as info:
        resolve_dataset("x", data_dir)
    assert "x.file_name" in (info.value.hint or "")


def test_hub_entry_without_local_copy_says_offline(tmp_path: Path) -> None:
    data_dir = make_info(tmp_path, {"hub": {"hf_hub_url": "org/set"},
                                    "ok": {"file_name": "a.jsonl"}}, {"a.jsonl": jsonl(GOOD)})
    with pytest.raises(UnsupportedError, match="not available offline"):
        resolve_dataset("hub", data_dir)
    assert len(read_dataset(resolve_dataset("ok", data_dir)).examples) == 1


def test_hub_entry_with_local_copy_loads(tmp_path: Path) -> None:
    data_dir = make_info(tmp_path, {"hub": {"hf_hub_url": "org/set"}},
                         {"org/set/train.jsonl": jsonl(GOOD, GOOD)})
    assert len(read_dataset(resolve_dataset("hub", data_dir)).examples) == 2


def test_media_columns_are_refused(tmp_path: Path) -> None:
    data_dir = make_info(tmp_path, {"m": {"file_name": "a.json", "formatting": "sharegpt",
                                          "columns": {"messages": "messages",
                                                      "images": "images"}}}, {})
    with pytest.raises(UnsupportedError, match="multimodal"):
        resolve_dataset("m", data_dir)


def test_broken_dataset_info_json(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "dataset_info.json").write_text('{\n  "x": {"file_name": "a.json",}\n}\n')
    with pytest.raises(DataError) as info:
        resolve_dataset("x", data_dir)
    assert (info.value.first.file, info.value.first.line) == (
        str(data_dir / "dataset_info.json"), 2)


def test_stage_kind_mismatch(write) -> None:
    path = write("pt.txt", "text\n")
    with pytest.raises(UserError, match="needs pairwise records"):
        read_dataset(resolve_dataset(str(path), path.parent), want="pairwise")


def test_first_record_not_an_object(write) -> None:
    path = write("numbers.json", "[\n  1,\n  2\n]\n")
    issue = first_issue(path)
    assert (issue.file, issue.line, issue.field) == (str(path), 2, "[0]")
    assert "expected JSON objects" in issue.message
