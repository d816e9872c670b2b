"""What `tuneforge data validate` and `data preview` report: kind, counts, drops, tokens."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from tuneforge.config.run import RunConfig
from tuneforge.data.load import DataBundle, load_data
from tuneforge.settings import Settings


def demo_dataset_dir() -> Path:
    """The folder of the demo dataset shipped inside the package."""
    return Path(str(resources.files("tuneforge.resources.demo")))


def summarize(bundle: DataBundle) -> dict[str, Any]:
    """Counts and drop reasons of every dataset in `bundle`, merged."""
    reasons: dict[str, int] = {}
    for dataset in bundle.datasets:
        for reason, count in dataset.report.reasons.most_common():
            reasons[reason] = reasons.get(reason, 0) + count
    rows = sum(d.report.rows for d in bundle.datasets)
    kept = sum(d.report.kept for d in bundle.datasets)
    return {
        "name": ", ".join(d.name for d in bundle.datasets),
        "kind": bundle.kind,
        "files": [str(f) for d in bundle.datasets for f in d.files],
        "rows": rows,
        "kept": kept,
        "dropped": rows - kept,
        "reasons": reasons,
        "issues": [str(issue) for d in bundle.datasets for issue in d.report.issues],
        "train": len(bundle.train),
        "eval": len(bundle.eval),
    }


def _load(name: str, config: RunConfig, stage: str | None) -> DataBundle:
    data = config.data.model_copy(update={"dataset": [name]})
    return load_data(data, stage=stage, seed=config.training.seed)


def inspect_dataset(name: str, config: RunConfig, *, stage: str | None = None,
                    settings: Settings) -> dict[str, Any]:
    """Load dataset `name` with `config` and summarise it; token lengths with a tokenizer."""
    bundle = _load(name, config, stage)
    summary = summarize(bundle)
    if config.model.tokenizer and bundle.kind in ("pt", "sft", "pairwise", "kto"):
        from tuneforge.data.token_stats import token_stats

        summary["tokens"] = token_stats(bundle.train + bundle.eval, config, settings)
    return summary


def preview_dataset(name: str, config: RunConfig, *, stage: str | None = None, count: int,
                    settings: Settings) -> tuple[str, list[list[tuple[str, bool]]]]:
    """The rendered training text of the first `count` samples, pieces flagged if learned."""
    from tuneforge.data.token_stats import preview_pieces

    bundle = _load(name, config, stage)
    return preview_pieces(bundle.train[:count], config, settings)
