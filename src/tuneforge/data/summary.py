"""What `tuneforge data validate` reports: kind, counts, drops, and token lengths."""

from __future__ import annotations

from typing import Any

from tuneforge.config.data import DataConfig
from tuneforge.data.load import DataBundle, load_data


def summarize(bundle: DataBundle) -> dict[str, Any]:
    """Counts and drop reasons of every dataset in `bundle`, merged."""
    rows = sum(d.report.rows for d in bundle.datasets)
    kept = sum(d.report.kept for d in bundle.datasets)
    reasons: dict[str, int] = {}
    issues: list[str] = []
    for dataset in bundle.datasets:
        for reason, count in dataset.report.reasons.most_common():
            reasons[reason] = reasons.get(reason, 0) + count
        issues += [str(issue) for issue in dataset.report.issues]
    return {
        "name": ", ".join(d.name for d in bundle.datasets),
        "kind": bundle.kind,
        "rows": rows,
        "kept": kept,
        "dropped": rows - kept,
        "reasons": reasons,
        "issues": issues,
        "train": len(bundle.train),
        "eval": len(bundle.eval),
    }


def validate_dataset(name: str, cfg: DataConfig, *, stage: str | None = None,
                     seed: int = 42) -> tuple[DataBundle, dict[str, Any]]:
    """Load `name` with `cfg` and summarise it."""
    cfg = cfg.model_copy(update={"dataset": [name]})
    bundle = load_data(cfg, stage=stage, seed=seed)
    summary = summarize(bundle)
    summary["files"] = [str(f) for d in bundle.datasets for f in d.files]
    return bundle, summary
