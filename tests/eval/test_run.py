"""eval/run.py, loss.py, choice.py and report.py on the tiny Llama, and `tuneforge eval`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tuneforge.cli.main import main
from tuneforge.config import load_run_config
from tuneforge.config.eval import build_eval_config
from tuneforge.data.records import ChatExample, Location, Message
from tuneforge.errors import ConfigError, DataError
from tuneforge.eval.choice import choice_accuracy, predict_choices, read_choice_file
from tuneforge.eval.loss import eval_loss
from tuneforge.eval.run import evaluate
from tuneforge.settings import Settings

QA = [
    {"instruction": "What is the capital of France?", "output": "Paris is the capital."},
    {"instruction": "你好，今天怎么样？", "output": "很好，谢谢。"},
    {"instruction": "Give three tips for staying healthy.", "output": "eat fruit, sleep well"},
]
CHOICES = [
    {"question": "What is the capital of France?", "A": "Paris", "B": "sea", "C": "sky",
     "D": "wind", "answer": "A"},
    {"question": "北京是哪里的首都？", "A": "上海", "B": "中国", "C": "公园", "D": "天气",
     "answer": "B"},
    {"question": "Which one is a number?", "A": "fox", "B": "dog", "C": "42", "D": "sea",
     "answer": "C"},
]


def load(directory: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code), out, err


@pytest.fixture(scope="module")
def run_dir(tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose output/ holds a LoRA adapter on tiny_llm_dir with random, nonzero
    A and B (so it changes the model), saved as training saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "v_proj", "up_proj"])
    model = get_peft_model(load(tiny_llm_dir), lora)
    root = tmp_path_factory.mktemp("run")
    model.save_pretrained(str(root / "output"))
    AutoTokenizer.from_pretrained(str(tiny_llm_dir)).save_pretrained(str(root / "output"))
    (root / "output" / "tuneforge_template.json").write_text('{"template": "tokenizer"}\n')
    return root


def _config(data: Path, model: Path, **values: Any) -> Any:
    return load_run_config(values={"model_name_or_path": str(model), "dataset": str(data),
                                   "cutoff_len": 128, **values}, source="test")


def test_eval_loss_equals_the_models_own_loss_weighted_by_tokens(
        tiny_llm_dir: Path, tiny_tokenizer: Any) -> None:
    import torch

    from tuneforge.data.tokenize import TokenizeOptions, tokenize_examples

    examples = [ChatExample((Message("user", q["instruction"]),
                             Message("assistant", q["output"])), Location("t", i + 1))
                for i, q in enumerate(QA)]
    data = tokenize_examples(examples, tiny_tokenizer, TokenizeOptions(max_length=128))
    model = load(tiny_llm_dir)
    result = eval_loss(model, data, pad_token_id=tiny_tokenizer.pad_token_id, batch_size=2)
    total, count = 0.0, 0
    for i in range(len(data)):
        ids = torch.as_tensor(data.columns["input_ids"][i], dtype=torch.long)[None]
        labels = torch.as_tensor(data.columns["labels"][i], dtype=torch.long)[None]
        n = int((labels[0, 1:] != -100).sum())
        with torch.no_grad():
            total += float(model(input_ids=ids, labels=labels).loss) * n
        count += n
    assert result.tokens == count
    assert result.loss == pytest.approx(total / count, rel=1e-5)
    assert result.perplexity == pytest.approx(torch.exp(torch.tensor(total / count)).item(),
                                              rel=1e-5)


def test_choice_picks_do_not_depend_on_batching(write, tiny_llm_dir: Path,
                                                tiny_tokenizer: Any) -> None:
    from tuneforge.data.templates import select_template

    questions = read_choice_file(write("mc.json", CHOICES))
    assert [q.answer for q in questions] == [0, 1, 2]
    model, renderer = load(tiny_llm_dir), select_template(tiny_tokenizer, None)
    one = predict_choices(model, tiny_tokenizer, renderer, questions, batch_size=1)
    batched = predict_choices(model, tiny_tokenizer, renderer, questions, batch_size=3)
    assert one == batched
    expected = 100 * sum(p == q.answer for p, q in zip(one, questions, strict=True)) / 3
    assert choice_accuracy(one, questions) == expected


def test_evaluate_scores_a_csv_multiple_choice_file(write, tiny_llm_dir: Path) -> None:
    header = "id,question,A,B,C,D,answer\n"
    rows = "".join(f"{i},{c['question']},{c['A']},{c['B']},{c['C']},{c['D']},{c['answer']}\n"
                   for i, c in enumerate(CHOICES))
    path = write("ceval.csv", header + rows)
    result = evaluate(_config(path, tiny_llm_dir), build_eval_config({}), Settings())
    assert (result["kind"], result["samples"], result["metrics"]) == ("choice", 3, ["accuracy"])
    assert result["rows"][0]["metrics"]["accuracy"] in (0.0, 100 / 3, 200 / 3, 100.0)


def test_choice_file_problems_are_listed_with_lines(write) -> None:
    path = write("bad.jsonl", json.dumps(CHOICES[0]) + "\n"
                 + json.dumps({**CHOICES[1], "answer": "E"}, ensure_ascii=False) + "\n"
                 + json.dumps({**CHOICES[2], "C": ""}) + "\n")
    with pytest.raises(DataError) as info:
        read_choice_file(path)
    assert [str(i) for i in info.value.issues] == [
        f"{path}:2: answer: expected one of A, B, C, D, got 'E'",
        f"{path}:3: C: expected a non-empty value",
    ]


def test_a_metric_that_does_not_fit_the_data_is_a_config_error(write, tiny_llm_dir) -> None:
    path = write("qa.json", QA)
    with pytest.raises(ConfigError, match="expected metrics among loss, exact_match"):
        evaluate(_config(path, tiny_llm_dir), build_eval_config({"metrics": "accuracy"}),
                 Settings())


def test_compare_base_writes_json_md_and_png_into_the_run(
        write: Callable[..., Path], tiny_llm_dir: Path, run_dir: Path) -> None:
    path = write("qa.json", QA)
    options = build_eval_config({"adapter": str(run_dir), "compare_base": True,
                                 "max_new_tokens": 8})
    result = evaluate(_config(path, tiny_llm_dir), options, Settings())
    report = run_dir / "eval"
    assert sorted(p.name for p in report.iterdir()) == ["report.json", "report.md", "report.png"]
    assert result["files"] == [str(report / n) for n in ("report.json", "report.md",
                                                         "report.png")]
    stored = json.loads((report / "report.json").read_text(encoding="utf-8"))
    base, tuned = stored["rows"]
    assert (base["name"], tuned["name"]) == ("base", "fine-tuned")
    assert set(tuned["metrics"]) == {"loss", "perplexity", "exact_match", "f1", "rouge_l",
                                     "bleu", "chrf"}
    assert base["metrics"]["loss"] != tuned["metrics"]["loss"]
    assert stored["difference"]["loss"] == pytest.approx(
        tuned["metrics"]["loss"] - base["metrics"]["loss"])
    assert [g["reference"] for g in stored["generations"]] == [q["output"] for q in QA]
    assert set(stored["generations"][0]) == {"prompt", "reference", "base", "fine-tuned"}
    markdown = (report / "report.md").read_text(encoding="utf-8")
    for line in ("| base | ", "| fine-tuned | ", "| difference | ", "## Sample generations",
                 "- **fine-tuned**: "):
        assert line in markdown
    assert (report / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the base row is the base model itself: the adapter was switched off, not approximated
    alone = evaluate(_config(path, tiny_llm_dir), build_eval_config({"metrics": "loss"}),
                     Settings())
    assert alone["rows"][0]["metrics"]["loss"] == pytest.approx(base["metrics"]["loss"],
                                                                rel=1e-6)
    assert alone["files"] == []


def test_cli_prints_the_table_and_writes_to_output_dir(
        write, tiny_llm_dir: Path, tmp_path: Path, capsys) -> None:
    path = write("qa.json", QA)
    code, out, err = run(["eval", "--model", str(tiny_llm_dir), "--dataset", str(path),
                          "--metrics", "loss,f1", "--max_samples", "2",
                          "--output_dir", str(tmp_path / "out")], capsys)
    assert (code, err) == (0, "")
    assert "loss" in out and "f1" in out and "2 samples" in out
    assert (tmp_path / "out" / "report.md").is_file()


def test_cli_exits_2_with_one_line_on_a_missing_dataset(tiny_llm_dir, tmp_path, capsys) -> None:
    code, out, err = run(["eval", "--model", str(tiny_llm_dir), "--dataset", "nope",
                          "--dataset_dir", str(tmp_path)], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "nope" in err
