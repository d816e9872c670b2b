"""The distributed section: its fields, LLaMA-Factory's names and the rules between them."""

from __future__ import annotations

import pytest

from tuneforge.config import load_run_config
from tuneforge.errors import ConfigError


def test_llamafactory_distributed_names_land_in_the_distributed_section() -> None:
    config = load_run_config(values={"ddp_timeout": 180000000, "deepspeed": "ds_z3.json",
                                     "ddp_find_unused_parameters": True})
    assert config.distributed.ddp_timeout == 180000000
    assert config.distributed.deepspeed == "ds_z3.json"
    assert config.distributed.ddp_find_unused_parameters is True


def test_bare_fsdp_flag_is_true_and_a_string_passes_through() -> None:
    assert load_run_config(overrides=["--fsdp"]).distributed.fsdp is True
    config = load_run_config(overrides=["--fsdp", "full_shard auto_wrap"])
    assert config.distributed.fsdp == "full_shard auto_wrap"


@pytest.mark.parametrize(("flags", "words"), [
    (["--nproc_per_node", "2"], "need distributed.launcher=torchrun"),
    (["--launcher", "torchrun", "--nnodes", "2", "--node_rank", "2", "--master_port", "1",
      "--output_dir", "o"], "distributed.node_rank=2 is not below distributed.nnodes=2"),
    (["--launcher", "torchrun", "--nnodes", "2", "--output_dir", "o"],
     "needs distributed.master_port"),
    (["--launcher", "torchrun", "--nnodes", "2", "--master_port", "29500"],
     "needs output.output_dir"),
    (["--deepspeed", "ds.json", "--fsdp"], "shard with one of them"),
    (["--fsdp_config", "f.json"], "distributed.fsdp is not"),
    (["--launcher", "slurm"], "expected 'none' or 'torchrun'"),
    (["--master_port", "70000"], "less than or equal to 65535"),
    (["--ddp_backend", "nccl2"], "expected 'nccl'"),
])
def test_distributed_rules_name_the_fields(flags: list[str], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_run_config(overrides=flags)
    assert words in str(info.value)
