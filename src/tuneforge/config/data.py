"""DataConfig and CorpusConfig: where samples come from and how they are cut and mixed."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from tuneforge.config._base import Section, split_commas

FileType = Literal["auto", "json", "jsonl", "txt", "csv", "parquet"]
Formatting = Literal[
    "auto", "alpaca", "sharegpt", "openai", "text", "preference", "embedding", "rerank"
]
FILE_TYPES: tuple[str, ...] = ("json", "jsonl", "txt", "csv", "parquet")
FORMATTINGS: tuple[str, ...] = (
    "alpaca",
    "sharegpt",
    "openai",
    "text",
    "preference",
    "embedding",
    "rerank",
)
_PROPORTION = re.compile(r"^\s*(?:1\s*:\s*(?P<ratio>\d+(?:\.\d+)?)|(?P<pct>\d+(?:\.\d+)?)\s*%)\s*$")


class CorpusItem(Section):
    """An extra corpus mixed into the user's data (Qianfan's CorpusConfigItem)."""

    corpus_type: str = Field(description="The corpus: a dataset name or a local file path.")
    corpus_proportion: str = Field(
        description='"1:x" mixes x corpus records per user record; "x%" mixes that share '
        "of the corpus."
    )
    corpus_labels: list[str] = Field(
        default_factory=list,
        description="Keep only corpus records whose `labels` column holds one of these.",
    )

    @field_validator("corpus_proportion")
    @classmethod
    def _check_proportion(cls, value: str) -> str:
        match = _PROPORTION.match(value)
        if not match:
            raise ValueError(f'expected "1:x" or "x%", got {value!r}')
        if match["pct"] is not None and not 0 <= float(match["pct"]) <= 100:
            raise ValueError(f"expected a percentage in [0, 100], got {value!r}")
        return value.strip()

    _split = field_validator("corpus_labels", mode="before")(split_commas)

    def amount(self, n_user: int, n_corpus: int) -> int:
        """How many corpus records this proportion asks for."""
        match = _PROPORTION.match(self.corpus_proportion)
        assert match is not None  # checked by the validator
        if match["ratio"] is not None:
            return round(n_user * float(match["ratio"]))
        return round(n_corpus * float(match["pct"]) / 100)


class CorpusConfig(Section):
    """Corpora to mix into the training data (Qianfan's CorpusConfig)."""

    data_copy: bool = Field(
        default=False,
        description="Repeat corpus records when a corpus is shorter than its proportion asks.",
    )
    corpus_configs: list[CorpusItem] = Field(
        default_factory=list, description="The corpora and their proportions."
    )


class DataConfig(Section):
    """Datasets, formats, splits, sampling and tokenisation options."""

    dataset: list[str] = Field(
        default_factory=list,
        description="Training datasets: names in dataset_dir/dataset_info.json or file paths; "
        "a comma-separated string is accepted.",
    )
    eval_dataset: list[str] = Field(
        default_factory=list, description="Evaluation datasets, named like `dataset`."
    )
    dataset_dir: str = Field(
        default="data", description="Folder holding dataset_info.json and the data files."
    )
    file_type: FileType = Field(
        default="auto", description="File type; auto infers it from the extension."
    )
    formatting: Formatting = Field(
        default="auto",
        description="Record format; auto infers it from the first records.",
    )
    max_length: int = Field(
        default=2048, ge=1, description="Tokens per sample after truncation (cutoff_len)."
    )
    eval_split_ratio: float = Field(
        default=0.0,
        ge=0,
        lt=100,
        description="Percent of the training data held out for evaluation.",
    )
    sampling_rate: float = Field(
        default=1.0, gt=0, le=1, description="Fraction of the training data kept, sampled."
    )
    max_samples: int | None = Field(
        default=None, ge=1, description="Keep at most this many samples of each dataset."
    )
    mix_strategy: Literal["concat", "interleave_under", "interleave_over"] = Field(
        default="concat", description="How several datasets are combined."
    )
    interleave_probs: list[float] | None = Field(
        default=None, description="Sampling probabilities for interleaving, one per dataset."
    )
    corpus: CorpusConfig | None = Field(
        default=None, description="Extra corpora mixed in by proportion."
    )
    packing: bool = Field(
        default=False,
        description="Pack several SFT samples into one sequence (attention stays per sample).",
    )
    padding_free: bool = Field(
        default=True,
        description="Batch causal-LM samples as one row without padding (attention stays per "
        "sample; the loss is the padded batch's). Off pads each batch to its longest sample.",
    )
    mask_history: bool = Field(
        default=False, description="Learn only the last assistant turn of each conversation."
    )
    train_on_prompt: bool = Field(
        default=False, description="Learn the prompt tokens as well as the responses."
    )
    strict: bool = Field(
        default=False, description="Fail when any row is dropped instead of reporting it."
    )
    overwrite_cache: bool = Field(
        default=False, description="Re-tokenise even when a cached result exists."
    )
    preprocessing_num_workers: int | None = Field(
        default=None, ge=1, description="Processes for tokenisation; default: CPU count."
    )

    _split = field_validator("dataset", "eval_dataset", mode="before")(split_commas)

    @field_validator("interleave_probs", mode="before")
    @classmethod
    def _probs(cls, value: object) -> object:
        return [float(p) for p in split_commas(value)] if isinstance(value, str) else value
