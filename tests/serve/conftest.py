"""Fixtures for the serving engine: two tiny LoRA adapters on the tiny Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _adapter(base: Path, target: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    torch.manual_seed(seed)
    # init_lora_weights=False: B is random too, so the adapter changes the output at once
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(8.0)
    peft_model.save_pretrained(str(target))
    return target


@pytest.fixture(scope="session")
def tiny_adapters(tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two LoRA adapters with different random non-zero weights; "alpaca" was trained (says its
    tuneforge_template.json) with the alpaca template and sits in a run dir's output/."""
    root = tmp_path_factory.mktemp("adapters")
    first = _adapter(tiny_llm_dir, root / "first", seed=1)
    second = _adapter(tiny_llm_dir, root / "run" / "output", seed=2)
    (second / "tuneforge_template.json").write_text(json.dumps({"template": "alpaca"}))
    return {"first": first, "alpaca": root / "run"}
