"""What the machine can do: precision and quantisation checks, before any work is done."""

from __future__ import annotations

from tuneforge.config.run import RunConfig
from tuneforge.errors import UnsupportedError


def check_hardware(config: RunConfig) -> str:
    """The device training runs on; UnsupportedError for what this machine cannot do."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if config.effective_quantization_bit is not None:
        if device != "cuda":
            raise UnsupportedError(
                f"quantization_bit={config.effective_quantization_bit} (QLoRA)",
                "bitsandbytes quantisation needs a CUDA GPU and none is available",
                hint="drop --quantization_bit and use finetuning_type lora",
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UnsupportedError("QLoRA", "the bitsandbytes package is not installed",
                                   hint="pip install bitsandbytes") from None
    if config.training.fp16 and device != "cuda":
        raise UnsupportedError("fp16", "float16 mixed precision needs a CUDA GPU",
                               hint="drop --fp16, or use --bf16 on a CPU that supports it")
    if config.training.bf16 and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise UnsupportedError("bf16", "this GPU does not support bfloat16", hint="use --fp16")
    return device
