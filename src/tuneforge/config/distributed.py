"""DistributedConfig: how many processes train one run, and what they hand to transformers.

`launcher: torchrun` makes `tuneforge train` start itself under torchrun; DeepSpeed and FSDP
settings pass through to transformers' TrainingArguments unchanged (LLaMA-Factory's names).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.config._base import Section

DdpBackend = Literal["nccl", "gloo", "mpi", "xccl", "hccl", "cncl", "mccl"]


class DistributedConfig(Section):
    """Several processes per run: the launcher, its rendezvous, DDP, DeepSpeed and FSDP."""

    launcher: Literal["none", "torchrun"] = Field(
        default="none",
        description="torchrun: `tuneforge train` starts nproc_per_node processes on this node "
        "with torchrun; none: train in this process (or under a torchrun / accelerate launch "
        "you started yourself).",
    )
    nproc_per_node: int | None = Field(
        default=None, ge=1,
        description="Processes on this node (launcher=torchrun); default one per visible "
        "GPU, or 1 without a GPU.",
    )
    nnodes: int = Field(default=1, ge=1, description="Machines taking part (launcher=torchrun).")
    node_rank: int = Field(
        default=0, ge=0, description="This machine's index, 0 .. nnodes-1 (launcher=torchrun)."
    )
    master_addr: str = Field(
        default="127.0.0.1",
        description="Address of the node_rank 0 machine, where the processes meet.",
    )
    master_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Port on master_addr where the processes meet; on one node the default "
        "picks a free port, with several nodes it is required.",
    )
    ddp_backend: DdpBackend | None = Field(
        default=None,
        description="torch.distributed backend; default nccl on CUDA GPUs, gloo on CPUs.",
    )
    ddp_timeout: int = Field(
        default=1800, ge=1, description="Seconds before a distributed collective times out."
    )
    ddp_find_unused_parameters: bool = Field(
        default=False,
        description="DDP looks for parameters that got no gradient (slower; needed only by "
        "models that skip some trainable layers in a step).",
    )
    deepspeed: str | None = Field(
        default=None,
        description="Path to a DeepSpeed JSON config (ZeRO stage 1, 2 or 3), passed to "
        "transformers as is; needs CUDA GPUs and the deepspeed package.",
    )
    fsdp: bool | str = Field(
        default=False,
        description='PyTorch FSDP, passed to transformers: true, or its options such as '
        '"full_shard auto_wrap"; needs CUDA GPUs.',
    )
    fsdp_config: str | None = Field(
        default=None,
        description="Path to a JSON of FSDP settings (version, transformer_layer_cls_to_wrap, "
        "...), passed to transformers as is.",
    )
