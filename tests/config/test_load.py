"""config/load.py and config/aliases.py: the seeds' three naming schemes, errors with lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.config import RunConfig, dump_run_config, load_run_config
from tuneforge.config.run import SECTIONS
from tuneforge.errors import ConfigError

LLAMAFACTORY_YAML = """\
### model
model_name_or_path: ./Llama-2-7b-chat-hf
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 16
lora_target: q_proj,v_proj
quantization_bit: 4

### dataset
dataset: identity,alpaca_en_demo
template: llama2
cutoff_len: 1024
max_samples: 1000
overwrite_cache: true
preprocessing_num_workers: 2

### output
output_dir: saves/llama2-7b/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true

### train
per_device_train_batch_size: 8
gradient_accumulation_steps: 4
learning_rate: 5.0e-5
num_train_epochs: 2.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
fp16: true
ddp_timeout: 180000000

### eval
val_size: 0.1
per_device_eval_batch_size: 1
eval_strategy: steps
eval_steps: 500
"""


def test_llamafactory_yaml_maps_onto_canonical_fields(tmp_path: Path) -> None:
    path = tmp_path / "sft.yaml"
    path.write_text(LLAMAFACTORY_YAML)
    config = load_run_config(path)
    assert config.model.name_or_path == "./Llama-2-7b-chat-hf"
    assert config.model.trust_remote_code is True
    assert config.model.quantization_bit == 4
    assert config.model.template == "llama2"
    assert config.method.lora_rank == 16
    assert config.method.lora_target == ["q_proj", "v_proj"]
    assert config.data.dataset == ["identity", "alpaca_en_demo"]
    assert config.data.max_length == 1024
    assert config.data.eval_split_ratio == pytest.approx(10.0)
    assert config.training.epochs == 2.0
    assert config.training.learning_rate == 5e-5
    assert config.training.fp16 is True
    assert config.output.plot_loss is True


def test_seed_cli_flags_parse_like_llamafactory() -> None:
    # the seed's `accelerate launch src/train_bash.py ...` flags, verbatim
    argv = (Path(__file__).parents[1] / "assets" / "llamafactory_seed_flags.txt").read_text(
        encoding="utf-8").split()
    config = load_run_config(overrides=argv)
    assert config.data.overwrite_cache is True
    assert config.training.learning_rate == 5e-5
    assert config.training.save_steps == 1000
    assert config.output.plot_loss is True
    assert config.method.lora_target == ["q_proj", "v_proj"]


def test_qianfan_train_config_names() -> None:
    config = load_run_config(values={
        "train_type": "smollm2-135m-instruct", "epoch": 1, "batch_size": 32,
        "learning_rate": 0.00002, "max_seq_len": 4096, "peft_type": "ALL", "trainset_rate": 20,
    })
    assert config.model.name_or_path == "smollm2-135m-instruct"
    assert config.training.epochs == 1
    assert config.training.per_device_train_batch_size == 32
    assert config.data.max_length == 4096
    assert config.method.finetuning_type == "full"
    assert config.data.eval_split_ratio == 20


def test_rest_service_names_and_lora_config_block() -> None:
    config = load_run_config(values={
        "base_model": "Qwen/Qwen2-7B-Instruct", "dataset_path": "data/train.json",
        "output_dir": "models/checkpoints/my_task", "num_epochs": 3, "batch_size": 4,
        "learning_rate": 2e-4, "dataset_format": "json",
        "lora_config": {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj"],
                        "lora_dropout": 0.05, "bias": "none"},
    })
    assert config.data.dataset == ["data/train.json"]
    assert config.data.file_type == "json"
    assert config.method.lora_rank == 16
    assert config.method.lora_alpha == 32
    assert config.method.lora_target == ["q_proj", "k_proj"]
    assert config.output.output_dir == "models/checkpoints/my_task"


def test_dataset_format_routes_record_formats_too() -> None:
    assert load_run_config(values={"dataset_format": "sharegpt"}).data.formatting == "sharegpt"


def test_nested_sections_and_dotted_keys() -> None:
    config = load_run_config(
        values={"training": {"learning_rate": 1e-3}, "data": {"cutoff_len": 64}},
        overrides=["--method.lora_rank", "4"],
    )
    assert config.training.learning_rate == 1e-3
    assert config.data.max_length == 64
    assert config.method.lora_rank == 4


def test_unknown_key_names_file_line_and_suggests(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("stage: sft\nlearning_rat: 1e-4\n")
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    issue = info.value.first
    assert (issue.file, issue.line, issue.field) == (str(path), 2, "learning_rat")
    assert "did you mean 'learning_rate'" in issue.message


def test_unknown_key_in_a_section_suggests_within_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  lerning_rate: 1.0e-4\n")
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    assert info.value.first.line == 2
    assert info.value.first.field == "training.lerning_rate"
    assert "'learning_rate'" in info.value.first.message


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("learning_rate: -1.0\n", "learning_rate", "greater than 0"),
        ("num_train_epochs: 0\n", "num_train_epochs", "greater than 0"),
        ("lora_rank: 0\n", "lora_rank", "greater than or equal to 1"),
        ("per_device_train_batch_size: 0\n", "per_device_train_batch_size", "greater than"),
        ("val_size: 1.5\n", "val_size", "less than 100"),
        ("stage: finetune\n", "stage", "'pt'"),
        ("learning_rate: fast\n", "learning_rate", "got 'fast'"),
    ],
)
def test_out_of_range_values_name_the_key_as_typed(tmp_path: Path, text: str, field: str,
                                                   expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("stage: sft\n" + text if not text.startswith("stage") else text)
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    issue = info.value.first
    assert issue.field == field
    assert issue.line == (1 if text.startswith("stage") else 2)
    assert expected in issue.message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_run_config(values={"learning_rat": 1, "epoch": 0, "lora_rank": 0,
                                "learning_rate": -1})
    fields = {issue.field for issue in info.value.issues}
    assert fields == {"learning_rat", "epoch", "lora_rank", "learning_rate"}


def test_two_names_for_one_field_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_run_config(values={"num_train_epochs": 2, "epoch": 3})
    assert "already sets" in info.value.first.message


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1.0e-4\n")
    config = load_run_config(path, overrides=["--learning_rate=3e-4", "--plot_loss"])
    assert config.training.learning_rate == 3e-4
    assert config.output.plot_loss is True


def test_bad_override_value_names_command_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_run_config(overrides=["--lora_rank", "zero"])
    assert info.value.first.file == "command line"
    assert info.value.first.field == "lora_rank"


def test_cross_field_rule_names_both_fields() -> None:
    with pytest.raises(ConfigError, match="mask_history.*train_on_prompt"):
        load_run_config(values={"mask_history": True, "train_on_prompt": True})
    with pytest.raises(ConfigError, match="quantization_bit"):
        load_run_config(values={"finetuning_type": "full", "quantization_bit": 4})


def test_eval_only_settings_without_eval_data_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"training.early_stopping_steps and "
                                          r"training.load_best_model_at_end need evaluation"):
        load_run_config(values={"early_stopping_steps": 2, "load_best_model_at_end": True})
    with pytest.raises(ConfigError, match=r"load_best_model_at_end needs evaluation data"):
        load_run_config(values={"load_best_model_at_end": True})
    for held_out in ({"val_size": 0.1}, {"eval_dataset": "alpaca_en_demo"}):
        config = load_run_config(values={"early_stopping_steps": 2, **held_out})
        assert config.training.early_stopping_steps == 2


def test_invalid_yaml_reports_its_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("stage: sft\nlearning_rate: [1\n")
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    assert info.value.first.file == str(path)
    assert info.value.first.line is not None


def test_a_list_at_top_level_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_run_config(path)


def test_dump_reproduces_the_config(tmp_path: Path) -> None:
    config = load_run_config(values={"num_train_epochs": 2, "val_size": 0.2, "dataset": "a,b"})
    path = tmp_path / "config.yaml"
    path.write_text(dump_run_config(config))
    assert load_run_config(path) == config
    assert "num_train_epochs" not in path.read_text()


def test_every_field_has_a_description() -> None:
    missing = [
        f"{section}.{name}"
        for section, model in {**SECTIONS, "run": RunConfig}.items()
        for name, info in model.model_fields.items()
        if not info.description
    ]
    assert missing == []


def test_config_and_data_import_without_torch() -> None:
    code = (
        "import sys, tuneforge.config, tuneforge.data.load, tuneforge.cli.main; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
