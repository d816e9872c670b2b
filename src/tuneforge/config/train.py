"""MethodConfig (stage and fine-tuning method) and TrainingConfig (the optimisation loop)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tuneforge.config._base import Section, split_commas

Stage = Literal["pt", "sft", "rm", "dpo", "kto", "orpo", "embedding", "rerank"]
FinetuningType = Literal["full", "freeze", "lora", "qlora"]


class MethodConfig(Section):
    """What is trained: the stage and the fine-tuning method with its settings."""

    stage: Stage = Field(default="sft", description="Training stage.")
    finetuning_type: FinetuningType = Field(
        default="lora", description="full, freeze (last layers), lora or qlora."
    )
    lora_rank: int = Field(default=8, ge=1, description="LoRA rank r.")
    lora_alpha: int | None = Field(
        default=None, ge=1, description="LoRA alpha; default twice the rank."
    )
    lora_dropout: float = Field(default=0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_target: list[str] = Field(
        default_factory=lambda: ["all"],
        description='Modules LoRA wraps; "all" means every linear layer.',
    )
    lora_bias: Literal["none", "all", "lora_only"] = Field(
        default="none", description="Which biases LoRA trains (PEFT's `bias`)."
    )
    use_dora: bool = Field(default=False, description="Weight-decomposed LoRA (DoRA).")
    use_rslora: bool = Field(default=False, description="Rank-stabilised LoRA scaling.")
    freeze_trainable_layers: int = Field(
        default=2, description="freeze: train the last N layers (negative: the first N)."
    )
    freeze_trainable_modules: list[str] = Field(
        default_factory=lambda: ["all"],
        description='freeze: module names trained inside those layers; "all" for every one.',
    )
    pref_beta: float = Field(default=0.1, gt=0, description="DPO/KTO/ORPO beta.")
    pref_loss: Literal["sigmoid", "hinge", "ipo", "orpo"] = Field(
        default="sigmoid", description="Preference loss."
    )
    embedding_loss: Literal["mnrl", "cached_mnrl"] = Field(
        default="mnrl",
        description="embedding: in-batch negatives plus each query's hard negatives "
        "(sentence-transformers' MultipleNegativesRankingLoss), or its cached variant, which "
        "takes large batches in mini_batch_size pieces (GradCache).",
    )
    rerank_loss: Literal["listwise", "pointwise"] = Field(
        default="listwise",
        description="rerank: listwise (softmax over each query's passages, ListNet) or "
        "pointwise (binary cross-entropy per query/passage pair).",
    )
    temperature: float = Field(
        default=0.05, gt=0, le=1,
        description="embedding: softmax temperature of the contrastive loss (scale = 1 / "
        "temperature; FlagEmbedding's 0.02 is sharper).",
    )
    train_group_size: int = Field(
        default=4, ge=1,
        description="embedding/rerank: passages per query in a step, as in FlagEmbedding: one "
        "positive and train_group_size - 1 negatives (the record's hard negatives, then mined "
        "ones, then passages of other queries).",
    )
    query_instruction: str | None = Field(
        default=None,
        description="embedding: instruction put before every query (FlagEmbedding's "
        "query_instruction_for_retrieval), saved as the model's `query` prompt.",
    )
    mine_hard_negatives: int = Field(
        default=0, ge=0,
        description="embedding/rerank: mine this many hard negatives per query with the base "
        "embedding model before training (0: off).",
    )
    mining_corpus: str | None = Field(
        default=None,
        description="Passages to mine hard negatives from: a .txt file (one per line) or "
        "JSON/JSONL with a `text` field; default every passage of the training data.",
    )
    mini_batch_size: int = Field(
        default=32, ge=1, description="embedding_loss=cached_mnrl: texts per forward pass."
    )

    _split = field_validator("lora_target", "freeze_trainable_modules", mode="before")(split_commas)

    @field_validator("freeze_trainable_layers")
    @classmethod
    def _nonzero_layers(cls, value: int) -> int:
        if value == 0:
            raise ValueError("expected a non-zero number of layers, got 0")
        return value


class TrainingConfig(Section):
    """The optimisation loop: epochs, batch, learning rate, checkpoints, precision."""

    epochs: float = Field(default=3.0, gt=0, description="Passes over the training data.")
    max_steps: int = Field(
        default=-1, ge=-1, description="Stop after this many steps (-1: use epochs)."
    )
    per_device_train_batch_size: int = Field(
        default=4, ge=1, description="Samples per device per step."
    )
    per_device_eval_batch_size: int = Field(
        default=4, ge=1, description="Samples per device per evaluation step."
    )
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, description="Steps whose gradients add up before an update."
    )
    learning_rate: float = Field(default=2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler_type: str = Field(default="cosine", description="transformers scheduler name.")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up steps.")
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1, description="Warm-up share of steps.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, ge=0, description="Gradient clipping norm.")
    optim: str = Field(default="adamw_torch", description="transformers optimizer name.")
    logging_steps: int = Field(default=10, ge=1, description="Steps between log lines.")
    save_steps: int = Field(default=500, ge=1, description="Steps between checkpoints.")
    save_total_limit: int | None = Field(
        default=None, ge=1, description="Keep at most this many checkpoints."
    )
    eval_steps: int | None = Field(
        default=None, ge=1, description="Steps between evaluations; default save_steps."
    )
    eval_strategy: Literal["no", "steps", "epoch"] = Field(
        default="no", description="When to evaluate (steps with an eval set by default)."
    )
    early_stopping_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many evaluations without improvement."
    )
    load_best_model_at_end: bool = Field(
        default=False, description="Keep the checkpoint with the best eval loss."
    )
    resume_from_checkpoint: str | None = Field(
        default=None, description='A checkpoint path, or "auto" for the newest.'
    )
    seed: int = Field(default=42, description="Seed for data order, splits and initialisation.")
    bf16: bool | None = Field(
        default=None,
        description="bfloat16 mixed precision. Unset: on where the hardware runs bfloat16 "
        "faster than float32 (a GPU with bf16; a CPU whose bf16 matmul is measured faster).",
    )
    fp16: bool = Field(default=False, description="float16 mixed precision.")
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations to save memory."
    )
    torch_compile: bool = Field(
        default=False,
        description="Compile the model with torch.compile: faster steps after a compilation "
        "of a minute or more, so it pays only for long runs.",
    )
    do_train: bool = Field(
        default=True, description="Accepted for LLaMA-Factory compatibility; training runs."
    )
    do_eval: bool = Field(default=False, description="Evaluate after training.")
    dataloader_num_workers: int = Field(
        default=0, ge=0, description="Data-loading worker processes."
    )
    save_only_model: bool = Field(
        default=False, description="Checkpoints without optimizer state (cannot resume exactly)."
    )
