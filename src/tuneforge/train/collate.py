"""Batches for causal-LM stages: right-padded rows, or padding-free packed rows.

transformers' DataCollatorForSeq2Seq pads too, but it pads labels through the tokenizer and
cannot pass position_ids for packed rows; these two small functions cover both cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IGNORE_INDEX = -100


class TokenizedDataset:
    """A torch-style dataset over TokenizedData rows (lists of ids)."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.data[i]


class PaddingCollator:
    """Right-pad input_ids with pad_id and labels with -100; attention_mask marks real tokens.

    Rows carrying position_ids (packed) are concatenated into one row instead, padding-free:
    position ids reset per sample keep attention inside each sample.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if "position_ids" in rows[0]:
            return {
                key: torch.tensor([[x for row in rows for x in row[key]]], dtype=torch.long)
                for key in ("input_ids", "labels", "position_ids")
            }
        width = max(len(row["input_ids"]) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
