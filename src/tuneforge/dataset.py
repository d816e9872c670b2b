"""Qianfan's `qianfan.dataset`: `Dataset.load(data_file=...)` for local files,
`Dataset.load(name=...)` / `dataset_id=` for registered ones (see tuneforge.pipeline.dataset)."""

from tuneforge.pipeline.dataset import Dataset

__all__ = ["Dataset"]
