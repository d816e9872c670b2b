"""What the machine can do, checked before any work: here DeepSpeed and FSDP configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.config import load_run_config
from tuneforge.errors import NotFoundError, UnsupportedError
from tuneforge.train.hardware import check_hardware


def test_a_missing_deepspeed_json_is_named(tmp_path: Path) -> None:
    config = load_run_config(overrides=["--deepspeed", str(tmp_path / "ds.json")])
    with pytest.raises(NotFoundError, match="DeepSpeed config not found"):
        check_hardware(config)


def test_deepspeed_without_cuda_says_what_to_use_instead(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("DeepSpeed can run on this CUDA machine")
    ds = tmp_path / "ds.json"
    ds.write_text('{"zero_optimization": {"stage": 2}}')
    with pytest.raises(UnsupportedError, match="needs CUDA GPUs") as info:
        check_hardware(load_run_config(overrides=["--deepspeed", str(ds)]))
    assert "--launcher torchrun" in str(info.value)


def test_a_missing_fsdp_config_is_named(tmp_path: Path) -> None:
    config = load_run_config(overrides=["--fsdp", "--fsdp_config", str(tmp_path / "f.json")])
    with pytest.raises(NotFoundError, match="FSDP config not found"):
        check_hardware(config)


def test_a_training_run_bounds_onednn_kernel_caches_unless_sized() -> None:
    """Both caches are bounded when training starts (read once, at the first oneDNN
    product), unless the user sized them; importing the engine (as the server does) leaves
    them alone."""
    import os
    import subprocess
    import sys

    code = (
        "import os, tuneforge.train.run as run\n"
        "from tuneforge.config import load_run_config\n"
        "from tuneforge.settings import Settings\n"
        "before = os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY')\n"
        "config = load_run_config()\n"  # a stage no recipe has: train fails at its start
        "config = config.model_copy(update={'method': config.method.model_copy("
        "update={'stage': 'none'})})\n"
        "try:\n    run.train(config, Settings())\nexcept Exception:\n    pass\n"
        "print(before, os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'],"
        " os.environ['LRU_CACHE_CAPACITY'])\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["None", "64", "64"]
    env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "500"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["500", "500", "64"]
