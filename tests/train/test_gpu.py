"""The CUDA paths: bf16 by default, fp16, QLoRA in 4 and 8 bits. Skipped without a GPU
(CI has none); run on a CUDA machine with `pytest -m gpu tests/train/test_gpu.py`."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tuneforge.config import load_run_config
from tuneforge.data.summary import demo_dataset_dir
from tuneforge.settings import Settings
from tuneforge.train.run import train


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")]


def run(model: Path, out: Path, **overrides: Any) -> list[float]:
    values = {
        "model_name_or_path": str(model), "dataset": "forge_identity",
        "dataset_dir": str(demo_dataset_dir()), "output_dir": str(out), "max_steps": 4,
        "logging_steps": 1, "save_steps": 2, "per_device_train_batch_size": 4,
        "cutoff_len": 96, "learning_rate": 5e-3, "finetuning_type": "lora", **overrides,
    }
    outcome = train(load_run_config(values=values), Settings())
    assert outcome.result.status == "completed"
    assert (out / "output" / "adapter_model.safetensors").is_file()
    losses = [json.loads(line)["loss"] for line in (out / "trainer_log.jsonl").read_text()
              .splitlines()]
    assert all(math.isfinite(loss) for loss in losses)
    return losses


def test_bf16_is_the_default_on_a_gpu_that_has_it(tiny_llm_dir: Path, tmp_path: Path) -> None:
    import torch

    from tuneforge.train.hardware import use_bf16

    config = load_run_config(values={"model_name_or_path": str(tiny_llm_dir)})
    assert use_bf16(config, "cuda") == torch.cuda.is_bf16_supported()
    auto = run(tiny_llm_dir, tmp_path / "auto", seed=1)
    fp32 = run(tiny_llm_dir, tmp_path / "fp32", bf16=False, seed=1)
    assert auto == pytest.approx(fp32, rel=0.05)  # the loss stays what it is in float32


def test_fp16_trains(tiny_llm_dir: Path, tmp_path: Path) -> None:
    run(tiny_llm_dir, tmp_path / "fp16", fp16=True, bf16=False)


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_trains_a_quantised_base(tiny_llm_dir: Path, tmp_path: Path, bits: int) -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    run(tiny_llm_dir, tmp_path / f"q{bits}", finetuning_type="qlora", quantization_bit=bits)
    assert f"loaded {tiny_llm_dir}" in (tmp_path / f"q{bits}" / "train.log").read_text()


def test_dpo_trains_on_the_gpu(tiny_llm_dir: Path, tmp_path: Path, write) -> None:
    rows = [{"instruction": f"Question {i}?", "input": "", "chosen": f"Good answer {i}.",
             "rejected": f"Bad answer {i}."} for i in range(8)]
    data = write("pairs.json", rows)
    run(tiny_llm_dir, tmp_path / "dpo", stage="dpo", dataset=str(data), learning_rate=5e-4)
