"""The preference recipes (rm, dpo, kto) on the tiny random model, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tuneforge.cli.main import main
from tuneforge.config import load_run_config
from tuneforge.data.summary import demo_dataset_dir
from tuneforge.errors import ConfigError, DataError, UnsupportedError
from tuneforge.settings import Settings
from tuneforge.train.run import train

LF_FIELDS = {"current_steps", "total_steps", "loss", "eval_loss", "lr", "epoch", "percentage",
             "elapsed_time", "remaining_time", "grad_norm", "tokens", "tokens_per_s"}
PAIRS = [
    {"instruction": "What is the capital of France?", "input": "",
     "chosen": "Paris is the capital of France.", "rejected": "The lazy dog."},
    {"instruction": "Give three tips for staying healthy.", "input": "",
     "chosen": "Eat fruit, sleep well, walk every day.", "rejected": "No."},
    {"instruction": "Hello there, how are you today?", "input": "",
     "chosen": "I am fine, thank you, and you?", "rejected": "Numbers like 1 2 3."},
    {"instruction": "Translate this sentence into Chinese.", "input": "你好",
     "chosen": "你好，今天怎么样？", "rejected": "The quick brown fox."},
]
FEEDBACK = [
    {"instruction": row["instruction"], "input": row["input"], "output": row[side],
     "kto_tag": side == "chosen"}
    for row in PAIRS for side in ("chosen", "rejected")
]


def config(model: Path, data: Path, out: Path, stage: str, **overrides: Any):
    values = {
        "stage": stage, "model_name_or_path": str(model), "dataset": str(data),
        "output_dir": str(out), "max_steps": 4, "logging_steps": 1, "save_steps": 4,
        "per_device_train_batch_size": 2, "cutoff_len": 64, "learning_rate": 5e-3, "seed": 3,
        **overrides,
    }
    return load_run_config(values=values)


def log_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def test_reward_model_trains_its_score_head_and_ranks_chosen_first(
        tiny_llm_dir: Path, tmp_path: Path, write) -> None:
    import torch
    from peft import AutoPeftModelForSequenceClassification
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    out = tmp_path / "rm"
    outcome = train(config(tiny_llm_dir, write("pairs.json", PAIRS), out, "rm", max_steps=8),
                    Settings())
    assert outcome.result.status == "completed"
    lines = log_lines(out)
    assert [r["current_steps"] for r in lines] == list(range(1, 9))
    assert LF_FIELDS | {"accuracy", "margin"} <= set(lines[0])
    adapter = load_file(str(out / "output" / "adapter_model.safetensors"))
    assert any("score" in k for k in adapter) and any("lora_B" in k for k in adapter)
    assert json.loads((out / "output" / "tuneforge_template.json").read_text())["template"]

    model = AutoPeftModelForSequenceClassification.from_pretrained(str(out / "output"),
                                                                   num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(str(out / "output"))
    model.config.pad_token_id = tokenizer.pad_token_id

    def score(row: dict[str, str], side: str) -> float:
        messages = [{"role": "user", "content": "\n".join(filter(None, (row["instruction"],
                                                                      row["input"])))},
                    {"role": "assistant", "content": row[side]}]
        ids = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            return float(model(**ids).logits[0, 0])

    assert all(score(row, "chosen") > score(row, "rejected") for row in PAIRS)


def test_dpo_with_lora_starts_at_the_reference_and_logs_rewards(
        tiny_llm_dir: Path, tmp_path: Path, write) -> None:
    out = tmp_path / "dpo"
    outcome = train(config(tiny_llm_dir, write("pairs.json", PAIRS), out, "dpo",
                           pref_beta=0.2, pref_loss="sigmoid", val_size=0.25), Settings())
    assert outcome.result.status == "completed"
    train_lines = [r for r in log_lines(out) if r["loss"] is not None]
    assert [r["current_steps"] for r in train_lines] == [1, 2, 3, 4]
    first = train_lines[0]
    assert LF_FIELDS | {"accuracy", "rewards/margins", "rewards/chosen"} <= set(first)
    # the reference is the policy with its adapter off, so before the first update the two agree
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert first["loss"] == pytest.approx(0.6931, abs=1e-3)  # -log sigmoid(0)
    assert any(r["rewards/margins"] != 0 for r in train_lines[1:])
    assert any(r["eval_loss"] is not None for r in log_lines(out))
    files = {p.name for p in (out / "output").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
            "tuneforge_template.json"} <= files
    assert "ref" not in files  # no second adapter kept as the reference


def test_dpo_continues_an_sft_adapter_against_the_base(tiny_llm_dir: Path, tmp_path: Path,
                                                       write) -> None:
    import torch
    from safetensors.torch import load_file

    sft = tmp_path / "sft"
    train(load_run_config(values={
        "model_name_or_path": str(tiny_llm_dir), "dataset": "forge_identity",
        "dataset_dir": str(demo_dataset_dir()), "output_dir": str(sft), "max_steps": 2,
        "cutoff_len": 64, "learning_rate": 5e-3, "lora_rank": 4}), Settings())
    out = tmp_path / "dpo"
    outcome = train(config(tiny_llm_dir, write("pairs.json", PAIRS), out, "dpo",
                           adapter_name_or_path=str(sft / "output")), Settings())
    assert outcome.result.status == "completed"
    assert json.loads((out / "output" / "adapter_config.json").read_text())["r"] == 4
    before = load_file(str(sft / "output" / "adapter_model.safetensors"))
    after = load_file(str(out / "output" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # TRL keeps a frozen copy of the given adapter as the reference (the SFT model, as DPO
    # wants it), so before the first update policy and reference agree
    assert log_lines(out)[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert any(r["rewards/margins"] != 0 for r in log_lines(out)[1:])
    assert not (out / "output" / "ref").exists()  # the output is the trained adapter alone


def test_kto_trains_on_labelled_single_responses(tiny_llm_dir: Path, tmp_path: Path,
                                                 write) -> None:
    out = tmp_path / "kto"
    outcome = train(config(tiny_llm_dir, write("feedback.json", FEEDBACK), out, "kto",
                           finetuning_type="full", max_steps=2), Settings())
    assert outcome.result.status == "completed"
    lines = log_lines(out)
    assert [r["current_steps"] for r in lines] == [1, 2]
    assert LF_FIELDS | {"kl"} <= set(lines[0])
    assert (out / "output" / "model.safetensors").is_file()


def test_kto_refuses_one_sample_per_batch_before_loading(tiny_llm_dir: Path, tmp_path: Path,
                                                         write) -> None:
    out = tmp_path / "kto"
    with pytest.raises(ConfigError, match="per_device_train_batch_size"):
        train(config(tiny_llm_dir, write("feedback.json", FEEDBACK), out, "kto",
                     per_device_train_batch_size=1), Settings())
    assert not (out / "data_report.json").exists()


def test_sft_data_for_dpo_names_the_kinds(tiny_llm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds sft records; this stage needs pairwise records"):
        train(config(tiny_llm_dir, Path("forge_identity"), tmp_path / "run", "dpo",
                     dataset_dir=str(demo_dataset_dir())), Settings())


@pytest.mark.parametrize(("overrides", "words"), [
    ({"stage": "orpo"}, "stage orpo"),
    ({"stage": "dpo", "pref_loss": "orpo"}, "trl.experimental"),
])
def test_orpo_is_refused_as_unsupported(tiny_llm_dir: Path, tmp_path: Path, write, overrides,
                                        words) -> None:
    values = {"stage": "dpo", **overrides}
    with pytest.raises(UnsupportedError, match=words):
        train(config(tiny_llm_dir, write("pairs.json", PAIRS), tmp_path / "run", **values),
              Settings())


def test_cli_trains_dpo(tiny_llm_dir: Path, tmp_path: Path, write, capsys) -> None:
    out = tmp_path / "out"
    argv = ["train", "--stage", "dpo", "--model_name_or_path", str(tiny_llm_dir),
            "--dataset", str(write("pairs.json", PAIRS)), "--output_dir", str(out),
            "--finetuning_type", "lora", "--lora_target", "q_proj,v_proj", "--pref_beta", "0.1",
            "--per_device_train_batch_size", "2", "--max_steps", "2", "--logging_steps", "1",
            "--cutoff_len", "64"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    stdout, _ = capsys.readouterr()
    assert info.value.code == 0 and "completed" in stdout
    assert json.loads((out / "state.json").read_text())["stage"] == "dpo"
    assert "rewards/margins" in log_lines(out)[0]


def test_train_on_prompt_is_refused_for_preference_stages() -> None:
    with pytest.raises(ConfigError, match="stage=dpo does not accept data.train_on_prompt"):
        load_run_config(values={"stage": "dpo", "dataset": "x", "train_on_prompt": True})


def test_dpo_resumed_after_stop_matches_uninterrupted_losses(tiny_llm_dir: Path, tmp_path: Path,
                                                             write) -> None:
    data = write("pairs.json", PAIRS)
    whole = tmp_path / "whole"
    train(config(tiny_llm_dir, data, whole, "dpo", save_steps=100), Settings())
    parted = tmp_path / "parted"

    def stop_at_2(record: dict[str, Any]) -> None:
        if record["current_steps"] == 2:
            (parted / "STOP").touch()

    first = train(config(tiny_llm_dir, data, parted, "dpo", save_steps=100), Settings(),
                  progress=stop_at_2)
    assert first.result.status == "stopped" and first.result.global_step == 2
    second = train(config(tiny_llm_dir, data, parted, "dpo", save_steps=100), Settings())
    assert second.result.status == "completed" and second.result.global_step == 4
    expected = {r["current_steps"]: r["loss"] for r in log_lines(whole)}
    resumed = {r["current_steps"]: r["loss"] for r in log_lines(parted)}
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in range(1, 5):
        assert resumed[step] == pytest.approx(expected[step], abs=1e-5)
