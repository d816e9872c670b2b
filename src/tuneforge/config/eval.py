"""EvalConfig: what `tuneforge eval` measures, on which model, and where the report goes.

The model, template and data options are RunConfig's (model.*, data.*); this section holds
only what evaluation adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from tuneforge.config._base import Section, split_commas, validate_values

Metric = Literal["loss", "exact_match", "f1", "rouge_l", "bleu", "chrf", "accuracy",
                 # embedding models (retrieval sets) and rerankers (rerank sets)
                 "recall@1", "recall@5", "recall@10", "mrr", "ndcg@10"]


class EvalConfig(Section):
    """One evaluation: a model and optional adapter, the metrics, the report."""

    adapter: str | None = Field(
        default=None,
        description="A run directory (its output/ is used and the report goes to its eval/), "
        "a run id under the runs folder, or a PEFT adapter directory.",
    )
    metrics: list[Metric] = Field(
        default_factory=list,
        description="Metrics to compute; default: loss and every text metric for a chat "
        "dataset, loss for plain text, accuracy for a multiple-choice file, recall@1/5/10, "
        "mrr and ndcg@10 for an embedding model on a retrieval set, mrr and ndcg@10 on a "
        "rerank set.",
    )
    compare_base: bool = Field(
        default=False,
        description="Evaluate the base model too and report both rows and their difference.",
    )
    output_dir: str | None = Field(
        default=None,
        description="Where report.json/md/png go; default: the adapter run's eval/ folder "
        "(no report files without either).",
    )
    max_new_tokens: int = Field(
        default=64, ge=1, description="Most tokens generated per answer for the text metrics."
    )
    batch_size: int = Field(default=8, ge=1, description="Samples per forward pass.")

    _split = field_validator("metrics", mode="before")(split_commas)


def build_eval_config(values: Mapping[str, Any], source: str = "command line") -> EvalConfig:
    """An EvalConfig from plain values; every validation problem becomes one ConfigError.

    Raises:
        ConfigError: a value is missing, of the wrong type, or unknown.
    """
    return validate_values(EvalConfig, values, source)
