"""What the machine can do: precision and quantisation checks, before any work is done."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tuneforge.config.run import RunConfig
from tuneforge.errors import ConfigError, NotFoundError, UnsupportedError
from tuneforge.models.hardware import cpu_bf16_speedup, cpu_has_fast_bf16

# oneDNN's primitive cache and ideep's, per process (their defaults: 1,024 each)
KERNEL_CACHE_ENTRIES = "64"
SLOW_BF16 = 0.3  # asked-for bf16 is refused below this (emulated, no native kernels)


def training_device() -> str:
    """The device training runs on: cuda where torch sees a GPU, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_hardware(config: RunConfig) -> str:
    """The device training runs on; UnsupportedError for what this machine cannot do.
    `train` calls it once, before the run directory is made; recipes read `training_device`."""
    import torch

    device = training_device()
    if device != "cuda":  # every GPU-only option in one error: the user drops them at once
        bits = config.effective_quantization_bit
        gpu_only = [(f"quantization_bit={bits} (QLoRA: bitsandbytes)", "--quantization_bit",
                     "LoRA trains the unquantised model")] if bits is not None else []
        if config.training.fp16:
            gpu_only.append(("fp16 (float16 mixed precision)", "--fp16",
                             "bf16 is used by itself where this CPU has it"))
        if gpu_only:
            raise UnsupportedError(
                " and ".join(feature for feature, _, _ in gpu_only),
                f"need{'s' if len(gpu_only) == 1 else ''} a CUDA GPU and none is available",
                hint="drop " + " and ".join(flag for _, flag, _ in gpu_only) + ": "
                     + "; ".join(note for _, _, note in gpu_only))
    if config.effective_quantization_bit is not None:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UnsupportedError("QLoRA", "the bitsandbytes package is not installed",
                                   hint="pip install bitsandbytes") from None
    if config.training.bf16 and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise UnsupportedError("bf16", "this GPU does not support bfloat16", hint="use --fp16")
    if config.training.bf16 and device == "cpu" and cpu_bf16_speedup() < SLOW_BF16:
        raise UnsupportedError(
            "bf16", "this CPU has no native bfloat16 matmul (torch would emulate it, far slower "
            "than float32)", hint="drop --bf16; unset, bf16 is used where it is faster")
    _check_sharding(config, device)
    _check_report_to(config)
    return device


def use_bf16(config: RunConfig, device: str) -> bool:
    """Whether to train with bf16 autocast: as asked, or, unset, where it is faster."""
    import torch

    if config.training.bf16 is not None:
        return config.training.bf16
    if config.training.fp16:
        return False
    if device == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_fast_bf16()


def bound_kernel_caches() -> None:
    """Keep oneDNN's and ideep's caches of compiled matmul kernels small, unless the user
    sized them. `train` calls it first thing: both caches read it once, at the process's
    first oneDNN product (in a process that multiplied in bf16 before, it is too late, and
    the caches keep their default size). Serving keeps the defaults: its decoding shapes
    repeat.

    Each cache keeps up to 1,024 kernels, keyed by shape. Padding-free batches have a new
    row length nearly every step, so with bf16 on a CPU with AMX the caches grew by about
    20 MB a step: 0.6 GiB over a 30-step run of SmolLM2-135M. One step needs a few dozen
    kernels (its shapes repeat over the layers), so 64 each keeps the speed and bounds the
    memory; float32 products through MKL use neither cache.
    """
    import os

    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", KERNEL_CACHE_ENTRIES)
    os.environ.setdefault("LRU_CACHE_CAPACITY", KERNEL_CACHE_ENTRIES)  # ideep's


def _check_report_to(config: RunConfig) -> None:
    """Metric sinks transformers knows and can reach here (else it fails at the Trainer's
    start with a traceback, after the data and model have loaded)."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    sinks = [s for s in config.output.report_to if s not in ("none", "all")]
    unknown = [s for s in sinks if s not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise ConfigError.one(f"expected some of {', '.join(sorted(INTEGRATION_TO_CALLBACK))} "
                              f"or none, got {', '.join(unknown)}", field="output.report_to")
    missing = [s for s in sinks if s not in get_available_reporting_integrations()]
    if missing:
        raise UnsupportedError(f"report_to {', '.join(missing)}",
                               "its package is not installed in this environment",
                               hint=f"pip install {' '.join(missing)}, or drop --report_to")


def _check_sharding(config: RunConfig, device: str) -> None:
    d = config.distributed
    for name, path in (("DeepSpeed config", d.deepspeed), ("FSDP config", d.fsdp_config)):
        if path is not None and not Path(path).is_file():
            raise NotFoundError(name, path, hint="expected a JSON file")
    if d.deepspeed is None:
        return
    if device != "cuda":
        raise UnsupportedError("DeepSpeed", "DeepSpeed ZeRO needs CUDA GPUs and none is available",
                               hint="drop --deepspeed; on CPUs use --launcher torchrun (DDP)")
    if importlib.util.find_spec("deepspeed") is None:
        raise UnsupportedError("DeepSpeed", "the deepspeed package is not installed",
                               hint="pip install deepspeed")
