"""Fine-tuning methods: full, freeze (last N layers / named modules), lora and qlora (PEFT).

Each returns the model ready to train; which parameters train is decided here only.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.config.run import RunConfig
from tuneforge.config.train import MethodConfig
from tuneforge.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)
SCORE_HEADS = ("score", "classifier")  # what transformers calls a sequence classifier's head


def load_model(config: RunConfig, model_dir: Path, auto_class: Any, **kwargs: Any) -> nn.Module:
    """The base model to train: float32, or for QLoRA quantised by bitsandbytes onto this
    process's GPU (check_hardware has already refused QLoRA without CUDA).

    QLoRA follows the QLoRA paper's recipe, as LLaMA-Factory does: 4-bit NF4 with double
    quantisation (or 8-bit), computing in bf16 where the GPU has it, else fp16; then PEFT's
    prepare_model_for_kbit_training (norms in float32, input grads for checkpointing).
    Its SiLU-gated MLPs keep less for the backward pass (`train/swiglu.py`) and its RMSNorms
    run a leaner backward (`train/rmsnorm.py`), with the same results.
    """
    import torch

    from tuneforge.train.rmsnorm import fuse_rmsnorm
    from tuneforge.train.swiglu import fuse_swiglu

    bits = config.effective_quantization_bit
    common = {"trust_remote_code": config.model.trust_remote_code, **kwargs}
    if bits is None:
        model = auto_class.from_pretrained(str(model_dir), dtype=torch.float32, **common)
        fuse_swiglu(model)
        fuse_rmsnorm(model)
        return model
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    ) if bits == 4 else BitsAndBytesConfig(load_in_8bit=True)
    model = auto_class.from_pretrained(
        str(model_dir), quantization_config=quantization, dtype=compute,
        device_map={"": int(os.environ.get("LOCAL_RANK", "0"))}, **common)
    logger.info("loaded %s in %d-bit (bitsandbytes), computing in %s", model_dir, bits, compute)
    fuse_swiglu(model)
    fuse_rmsnorm(model)
    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=config.training.gradient_checkpointing)


def linear_module_names(model: nn.Module) -> list[str]:
    """The names (last component) of every linear layer except the output head: LoRA's "all"."""
    import torch

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output
    }
    return sorted(names)


def lora_config(model: nn.Module, method: MethodConfig, task_type: str = "CAUSAL_LM") -> Any:
    """The PEFT LoraConfig (LoRA, DoRA, rsLoRA) that `method` puts on `model`'s target modules.

    task_type SEQ_CLS (reward models) also trains and saves the new score head: PEFT adds it
    to modules_to_save.
    """
    from peft import LoraConfig

    available = linear_module_names(model)
    if task_type == "SEQ_CLS":  # the head is trained whole (modules_to_save), never wrapped
        available = [name for name in available if name not in SCORE_HEADS]
    targets = available if method.lora_target == ["all"] else method.lora_target
    missing = [t for t in targets if t not in available]
    if missing:
        raise ConfigError.one(
            f"no linear layer named {', '.join(missing)} in this model; expected some of "
            f"{', '.join(available)} or 'all'", field="method.lora_target",
        )
    return LoraConfig(
        r=method.lora_rank,
        lora_alpha=method.lora_alpha or 2 * method.lora_rank,
        lora_dropout=method.lora_dropout,
        target_modules=targets,
        bias=method.lora_bias,
        use_dora=method.use_dora,
        use_rslora=method.use_rslora,
        task_type=task_type,
    )


def apply_lora(model: nn.Module, method: MethodConfig, task_type: str = "CAUSAL_LM") -> nn.Module:
    """Wrap `model` with a PEFT LoRA (DoRA / rsLoRA) adapter on the target modules."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, method, task_type))


def apply_freeze(model: nn.Module, method: MethodConfig) -> nn.Module:
    """Train only the last N decoder layers (first N if negative), optionally only some of
    their modules, as LLaMA-Factory's freeze tuning does."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if not n_layers:
        raise ConfigError.one("freeze tuning needs a model with num_hidden_layers",
                              field="method.finetuning_type")
    count = method.freeze_trainable_layers
    if abs(count) > n_layers:
        raise ConfigError.one(f"expected at most {n_layers} layers, got {count}",
                              field="method.freeze_trainable_layers")
    layers = range(n_layers - count, n_layers) if count > 0 else range(-count)
    layer_pattern = re.compile(r"\.layers\.(\d+)\.")
    modules = method.freeze_trainable_modules
    for name, param in model.named_parameters():
        match = layer_pattern.search(name)
        in_layer = match is not None and int(match[1]) in layers
        wanted = modules == ["all"] or any(f".{m}." in name or name.endswith(f".{m}")
                                           for m in modules)
        param.requires_grad_(in_layer and wanted)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError.one(f"no parameter matches modules {modules} in the trained layers",
                              field="method.freeze_trainable_modules")
    return model


def start_from_adapter(model: nn.Module, adapter: Path | None, method: MethodConfig,
                       task_type: str = "CAUSAL_LM") -> tuple[nn.Module, bool]:
    """`model.adapter_name_or_path` applied as LLaMA-Factory applies it: a LoRA run of a causal
    LM continues training that adapter (its rank and targets: the lora_* options do not
    apply); any other run (full, freeze, a reward model's new head) starts from the base with
    the adapter merged in. Returns the model and whether it is the continued adapter."""
    if adapter is None:
        return model, False
    from peft import PeftModel

    if method.finetuning_type in ("lora", "qlora") and task_type == "CAUSAL_LM":
        logger.info("continuing the LoRA adapter in %s", adapter)
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True), True
    logger.info("merging the adapter in %s into the base before training", adapter)
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload(), False


def apply_method(model: nn.Module, method: MethodConfig, task_type: str = "CAUSAL_LM",
                 adapter: Path | None = None) -> nn.Module:
    """The model with exactly the parameters `method` trains set to require gradients,
    starting from `adapter` where one is given (`start_from_adapter`)."""
    model, continued = start_from_adapter(model, adapter, method, task_type)
    if continued:
        pass  # the adapter's own LoRA layers train
    elif method.finetuning_type in ("lora", "qlora"):
        model = apply_lora(model, method, task_type)
    elif method.finetuning_type == "freeze":
        model = apply_freeze(model, method)
        if task_type == "SEQ_CLS":  # a reward model's score head is new: it always trains
            for name in SCORE_HEADS:
                head = getattr(model, name, None)
                if head is not None:
                    head.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total,
                100 * trainable / max(total, 1))
    return model


def policy_and_adapter(model: nn.Module, method: MethodConfig, adapter: Path | None = None
                       ) -> tuple[nn.Module, Any]:
    """For TRL's DPO/KTO trainers: full and freeze applied to `model`; for LoRA the unwrapped
    model and its LoraConfig, which the trainer applies itself so that its reference model is
    the policy with the adapter disabled (no second copy of the weights). A continued
    `adapter` comes as the PEFT model itself; TRL then keeps a frozen copy of the adapter
    (named "ref") as the reference, so the reference is the model the run starts from."""
    if method.finetuning_type in ("lora", "qlora") and adapter is None:
        return model, lora_config(model, method)
    return apply_method(model, method, adapter=adapter), None
