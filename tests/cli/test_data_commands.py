"""`tuneforge data validate --tokenizer`, `data preview` and `demo` with real tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.cli.main import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code), out, err


@pytest.fixture
def chat_file(write) -> Path:
    rows = [
        {"instruction": "Hello there, how are you today?", "input": "",
         "output": "I am fine, thank you, and you?"},
        {"instruction": "What is the capital of France?", "input": "",
         "output": "Paris is the capital of France. " * 20},
        {"instruction": "你好，今天怎么样？" * 20, "input": "", "output": "很好，谢谢。"},
    ]
    return write("chat.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def test_validate_with_tokenizer_reports_lengths_and_cutoff(chat_file, tiny_tokenizer_dir,
                                                            capsys) -> None:
    code, out, err = run(["data", "validate", str(chat_file), "--tokenizer",
                          str(tiny_tokenizer_dir), "--cutoff_len", "60"], capsys)
    assert (code, err) == (0, "")
    assert "tokens per sample" in out
    truncated = next(line for line in out.splitlines() if "truncated by cutoff_len=60" in line)
    dropped = next(line for line in out.splitlines() if "dropped by cutoff_len" in line)
    assert truncated.split("│")[2].strip() == "2"
    # LLaMA-Factory's rule: the long prompt gives way, so the answer survives
    assert dropped.split("│")[2].strip() == "0"


def test_validate_counts_samples_cutoff_len_would_drop(chat_file, tiny_tokenizer_dir,
                                                        capsys) -> None:
    code, out, _ = run(["data", "validate", str(chat_file), "--tokenizer",
                        str(tiny_tokenizer_dir), "--cutoff_len", "2"], capsys)
    assert code == 0
    dropped = next(line for line in out.splitlines() if "dropped by cutoff_len" in line)
    assert int(dropped.split("│")[2]) > 0


def test_preview_marks_the_learned_spans(chat_file, tiny_tokenizer_dir, capsys) -> None:
    code, out, _ = run(["data", "preview", str(chat_file), "--tokenizer",
                        str(tiny_tokenizer_dir), "-n", "1"], capsys)
    assert code == 0
    assert "<|im_start|>user\nHello there, how are you today?<|im_end|>" in out
    assert "[[I am fine, thank you, and you?<|im_end|>\n]]" in out
    assert "sample 1" not in out


def test_preview_with_a_named_template(chat_file, tiny_tokenizer_dir, capsys) -> None:
    code, out, _ = run(["data", "preview", str(chat_file), "--tokenizer",
                        str(tiny_tokenizer_dir), "--template", "alpaca", "-n", "1"], capsys)
    assert code == 0
    assert "### Instruction:\nHello there, how are you today?" in out


def test_unknown_template_lists_the_valid_ones(chat_file, tiny_tokenizer_dir, capsys) -> None:
    code, _, err = run(["data", "preview", str(chat_file), "--tokenizer",
                        str(tiny_tokenizer_dir), "--template", "chatm1"], capsys)
    assert code == 2
    assert "chatml" in err and "llama3" in err and err.count("\n") == 1


def test_unknown_tokenizer_is_a_user_error(chat_file, capsys) -> None:
    code, _, err = run(["data", "validate", str(chat_file), "--tokenizer", "no/such/dir"],
                       capsys)
    assert code == 2 and err.startswith("error: tokenizer not found")


def test_demo_trains_and_compares_held_out_answers(tiny_llm_dir: Path, capsys) -> None:
    """The demo's whole flow on the tiny model (the real model runs in `make demo`)."""
    code, out, err = run(["demo", "--model", str(tiny_llm_dir), "--no-embedding",
                          "--max_steps", "2", "--cutoff_len", "64"], capsys)
    assert code == 0, err
    assert "held-out questions: before -> after training" in out
    assert "Who are you, exactly?" in out and "answers with the new identity: before" in out
    plot = Path(out.split("loss plot: ", 1)[1].split("\n", 1)[0].strip())
    assert plot.name == "loss.png" and plot.is_file()
    assert "completed after 2 steps" in out and "training" in err
