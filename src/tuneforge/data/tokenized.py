"""The result of tokenisation: ragged int32 columns, per-row flags, and the report.

Rows are stored flat (one int32 array per column plus int64 row offsets) so that they can be
written with numpy and memory-mapped back; `TokenizedData[i]` gives one row as lists.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneforge.data.records import Kind, Location

IGNORE_INDEX = -100
"""Label of a token that is not learned (the loss ignores it)."""


def row_positions(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where rows `rows` of a flat ragged array lie, and the offsets of those rows packed.

    values[positions] is the rows concatenated in the order asked; repeats are allowed.
    """
    lengths = offsets[1:][rows] - offsets[:-1][rows]
    new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    shift = np.repeat(offsets[:-1][rows] - new_offsets[:-1], lengths)
    return np.arange(int(new_offsets[-1]), dtype=np.int64) + shift, new_offsets


@dataclass(frozen=True)
class Ragged:
    """Variable-length int32 rows: row i is values[offsets[i]:offsets[i + 1]]."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[np.ndarray]) -> Ragged:
        """Pack a list of 1-D arrays."""
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        """The length of every row."""
        return np.diff(self.offsets)


@dataclass(frozen=True)
class Note:
    """One sample that was dropped or truncated, with where it came from."""

    loc: Location
    reason: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        loc = self.loc
        return {"file": loc.file, "line": loc.line, "index": loc.index, "reason": self.reason,
                "detail": self.detail}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Note:
        return cls(Location(d["file"], d["line"], d["index"]), d["reason"], d["detail"])

    def __str__(self) -> str:
        return f"{self.loc}: {self.reason}: {self.detail}"


@dataclass(frozen=True)
class TokenizeReport:
    """What tokenisation kept, cut and dropped; never silent about a sample."""

    total: int
    kept: int
    rows: int
    tokens: int
    dropped: tuple[Note, ...] = ()
    truncated: tuple[Note, ...] = ()
    remainder_tokens: int = 0

    @property
    def reasons(self) -> dict[str, int]:
        """How many samples each reason (drop or truncation) applied to."""
        counts: dict[str, int] = {}
        for note in (*self.dropped, *self.truncated):
            counts[note.reason] = counts.get(note.reason, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary with every note."""
        return {
            "total": self.total, "kept": self.kept, "truncated_count": len(self.truncated),
            "dropped_count": len(self.dropped), "rows": self.rows, "tokens": self.tokens,
            "remainder_tokens": self.remainder_tokens, "reasons": self.reasons,
            "dropped": [n.to_dict() for n in self.dropped],
            "truncated": [n.to_dict() for n in self.truncated],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenizeReport:
        return cls(
            total=d["total"], kept=d["kept"], rows=d["rows"], tokens=d["tokens"],
            dropped=tuple(Note.from_dict(n) for n in d["dropped"]),
            truncated=tuple(Note.from_dict(n) for n in d["truncated"]),
            remainder_tokens=d["remainder_tokens"],
        )


@dataclass(frozen=True)
class TokenizedData:
    """Tokenised rows of one kind, ready for a trainer.

    Columns by kind: sft/pt `input_ids`, `labels` (and `position_ids` when packed);
    kto the same plus the flag `kto_tag`; pairwise `chosen_input_ids`, `chosen_labels`,
    `rejected_input_ids`, `rejected_labels`.
    """

    kind: Kind
    columns: Mapping[str, Ragged]
    report: TokenizeReport
    template: Mapping[str, str]
    flags: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i: int) -> dict[str, Any]:
        row: dict[str, Any] = {name: col[i].tolist() for name, col in self.columns.items()}
        row.update({name: bool(flag[i]) for name, flag in self.flags.items()})
        return row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    @property
    def num_tokens(self) -> int:
        """Tokens in the first column (input_ids or chosen_input_ids)."""
        return int(len(next(iter(self.columns.values())).values))
