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
    """Batches of causal-LM rows, padding-free or right-padded.

    Padding-free (the default): the batch's rows are concatenated into one row whose
    position_ids restart at every sample (rows already packed carry their own), so that
    transformers keeps attention inside each sample and no compute goes to padding. The
    first token of every sample is not learned: it would be predicted from the previous
    sample's end. Padded: input_ids right-padded with pad_id, labels with -100, and an
    attention_mask marking the real tokens.
    """

    def __init__(self, pad_id: int, *, padding_free: bool = True) -> None:
        self.pad_id = pad_id
        self.padding_free = padding_free

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if self.padding_free or "position_ids" in rows[0]:
            ids = [x for row in rows for x in row["input_ids"]]
            labels = [x for row in rows for x in row["labels"]]
            positions = [x for row in rows
                         for x in row.get("position_ids") or range(len(row["input_ids"]))]
            labels = [IGNORE_INDEX if p == 0 else y for p, y in zip(positions, labels, strict=True)]
            return {key: torch.tensor([values], dtype=torch.long) for key, values in
                    (("input_ids", ids), ("labels", labels), ("position_ids", positions))}
        width = max(len(row["input_ids"]) for row in rows)
        ids_t = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels_t = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids_t[i, :n] = torch.tensor(row["input_ids"])
            labels_t[i, :n] = torch.tensor(row["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids_t, "labels": labels_t, "attention_mask": mask}
