"""The CLI face: thin commands, one-line errors with exit code 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tuneforge.cli.main import main
from tuneforge.data.summary import demo_dataset_dir


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code), out, err


def test_validate_reports_kind_and_counts(capsys) -> None:
    code, out, err = run(["data", "validate", "forge_identity",
                          "--dataset_dir", str(demo_dataset_dir())], capsys)
    assert (code, err) == (0, "")
    assert "sft" in out and "102" in out


def test_validate_lists_dropped_rows_and_exits_2(write, capsys) -> None:
    path = write("d.jsonl", '{"instruction": "q", "output": "a"}\n{"instruction": "q"}\n'
                            '{"instruction": "q", "output": ""}\n')
    code, out, err = run(["data", "validate", str(path)], capsys)
    assert code == 2
    assert f"{path}:2: output: missing column 'output'" in out
    assert f"{path}:3: output: expected a non-empty response" in out
    assert err == f"error: {path}: 2 of 3 rows are invalid\n"


def test_validate_all_lists_every_problem(write, capsys) -> None:
    rows = '{"instruction": "q", "output": "a"}\n' + '{"instruction": "q"}\n' * 8
    path = write("d.jsonl", rows)
    _, out, _ = run(["data", "validate", str(path)], capsys)
    assert "3 more (use --all)" in out
    _, out, _ = run(["data", "validate", str(path), "--all"], capsys)
    assert sum(line.endswith("missing column 'output'") for line in out.splitlines()) == 8


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["data", "validate", "no_such_dataset"], "error: dataset not found: 'no_such_dataset'"),
        (["data", "validate", "x", "--cutoff_len", "0"], "cutoff_len: expected greater than"),
        (["data", "validate", "x", "--formatting", "xml"], "formatting: expected 'auto'"),
        (["config", "show", "--lerning_rate", "1"], "did you mean 'learning_rate'"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(argv, expected, capsys) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.startswith(expected) or expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_broken_json_names_file_and_line(write, capsys) -> None:
    path = write("b.jsonl", '{"instruction": "q", "output": "a"}\n{"instruction": \n')
    code, _, err = run(["data", "validate", str(path)], capsys)
    assert code == 2
    assert err.startswith(f"error: {path}:2: invalid JSON")


def test_config_show_prints_canonical_yaml(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model_name_or_path: m\nnum_train_epochs: 2\nval_size: 0.25\n")
    code, out, _ = run(["config", "show", str(path), "--lora_rank", "4"], capsys)
    assert code == 0
    resolved = yaml.safe_load(out)
    assert resolved["model"]["name_or_path"] == "m"
    assert resolved["training"]["epochs"] == 2
    assert resolved["data"]["eval_split_ratio"] == 25
    assert resolved["method"]["lora_rank"] == 4


def test_config_schema_is_json_schema(capsys) -> None:
    code, out, _ = run(["config", "schema"], capsys)
    assert code == 0 and set(json.loads(out)["properties"]) == {
        "model", "data", "method", "training", "output", "distributed"}


def test_usage_error_exits_2(capsys) -> None:
    code, _, err = run(["data", "validate"], capsys)
    assert code == 2 and "Missing argument" in err


def test_console_script_has_no_traceback_for_user_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("stage: sft\nlearning_rate: -1\n")
    result = subprocess.run([sys.executable, "-m", "tuneforge", "config", "show", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == (f"error: {config}:2: learning_rate: expected greater than 0, "
                             "got -1\n")
