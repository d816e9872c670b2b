"""RunConfig -> transformers TrainingArguments: the one place the mapping lives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.config.run import RunConfig
from tuneforge.train.hardware import use_bf16


def training_arguments(config: RunConfig, output_dir: Path, *, has_eval: bool, device: str,
                       cls: type | None = None, **extra: Any) -> Any:
    """TrainingArguments for `config`, checkpoints under `output_dir`.

    Args:
        cls: a TrainingArguments subclass to build instead (TRL's DPOConfig, RewardConfig, ...),
            from the same values.
        extra: that class's own fields (beta, loss_type, max_length, ...).
    """
    from transformers import TrainingArguments

    cls = cls or TrainingArguments

    t = config.training
    eval_strategy = t.eval_strategy
    if has_eval and eval_strategy == "no":
        eval_strategy = "steps"
    if not has_eval:
        eval_strategy = "no"
    best = has_eval and (t.load_best_model_at_end or t.early_stopping_steps is not None)
    return cls(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        # transformers 5 takes a ratio in [0, 1) through warmup_steps as well
        warmup_steps=t.warmup_steps or t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=None,  # RunCallback rotates, once the new checkpoint is complete
        save_only_model=t.save_only_model,
        eval_strategy=eval_strategy,
        eval_steps=(t.eval_steps or t.save_steps) if eval_strategy == "steps" else None,
        load_best_model_at_end=best,
        metric_for_best_model="eval_loss" if best else None,
        greater_is_better=False if best else None,
        seed=t.seed,
        data_seed=t.seed,
        bf16=use_bf16(config, device),
        fp16=t.fp16,
        activation_checkpointing=t.gradient_checkpointing,
        torch_compile=t.torch_compile,
        use_cpu=device == "cpu",
        ddp_timeout=config.distributed.ddp_timeout,
        ddp_backend=config.distributed.ddp_backend,
        # LoRA and freeze train every parameter they mark trainable: no search (LLaMA-Factory's
        # default too), which also lets gradient checkpointing work under DDP
        ddp_find_unused_parameters=config.distributed.ddp_find_unused_parameters,
        deepspeed=config.distributed.deepspeed,
        fsdp=config.distributed.fsdp or None,
        fsdp_config=config.distributed.fsdp_config,
        dataloader_num_workers=t.dataloader_num_workers,
        report_to=list(config.output.report_to) or "none",
        run_name=config.output.run_name,
        disable_tqdm=True,  # the callback reports progress
        remove_unused_columns=False,
        # padding-free causal-LM batches hold no padding: every token is counted
        # (encoders: sentence-transformers' batches hold texts or per-column ids: not counted)
        include_num_input_tokens_seen="no" if config.method.stage in ("embedding", "rerank")
        else "all" if config.data.padding_free and config.method.stage in ("pt", "sft")
        else "non_padding",
        prediction_loss_only=True,  # evaluation needs the loss, not every logit
        **extra,
    )
