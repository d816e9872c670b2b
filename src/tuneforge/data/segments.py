"""Batched tokenisation that encodes each distinct segment of text once.

The Rust tokenizer first cuts a text at its added tokens (special tokens such as
`<|im_start|>`) and then tokenises every segment between them on its own. So cutting the
texts at the same places ourselves, encoding each distinct segment once with `encode_batch`
(system prompts, role headers and repeated samples recur constantly) and gluing the results
back together gives exactly the ids of tokenising each whole text. That claim is checked on
a few texts per call, and a tokenizer whose added tokens strip or match whole words (where
the cut points would differ) is encoded whole-text instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from tuneforge.data.tokenized import row_positions
from tuneforge.errors import UnsupportedError

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

_CHECKED_TEXTS = 8


@dataclass(frozen=True)
class Encoded:
    """Token ids of many texts, concatenated: text i is ids[offsets[i]:offsets[i + 1]]."""

    ids: np.ndarray
    starts: np.ndarray
    """Index of each token's first character within its own text."""
    offsets: np.ndarray

    def lengths(self) -> np.ndarray:
        """Tokens per text."""
        return np.diff(self.offsets)


def backend_of(tokenizer: PreTrainedTokenizerBase) -> Tokenizer:
    """The Rust `tokenizers.Tokenizer` behind a transformers fast tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedError(
            "tokenizer", f"{type(tokenizer).__name__} is a slow (Python) tokenizer",
            hint="tuneforge needs a fast tokenizer (a tokenizer.json)",
        )
    return backend


def added_token_pattern(backend: Tokenizer) -> re.Pattern[str] | None:
    """A regex cutting text at added tokens exactly as the Rust tokenizer does, if possible."""
    tokens = list(backend.get_added_tokens_decoder().values())
    if not tokens or backend.encode_special_tokens:
        return None
    for t in tokens:
        normalized = t.normalized and backend.normalizer is not None
        if t.lstrip or t.rstrip or t.single_word or normalized:
            return None
    # Longest first: the Rust side matches leftmost-longest.
    contents = sorted({t.content for t in tokens}, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, contents)) + ")")


def encode_texts(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> Encoded:
    """Tokenise every text (no special tokens added) through distinct segments, in parallel."""
    backend = backend_of(tokenizer)
    pattern = added_token_pattern(backend)
    # Identical texts (duplicate or oversampled records) are tokenised once.
    index: dict[str, int] = {}
    which = np.fromiter(
        (index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts)
    )
    unique = list(index)
    encoded = _encode_segments(unique, backend, pattern)
    if pattern is not None and not _agrees_with_whole_texts(unique, encoded, backend):
        logger.warning("cutting at added tokens changed the ids; encoding whole texts instead")
        encoded = _encode_segments(unique, backend, None)
    if len(unique) == len(texts):
        return encoded
    positions, offsets = row_positions(encoded.offsets, which)
    return Encoded(encoded.ids[positions], encoded.starts[positions], offsets)


def encode_texts_plainly(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> Encoded:
    """The reference: one ordinary tokenizer call per text."""
    ids: list[list[int]] = []
    starts: list[list[int]] = []
    for text in texts:
        out = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids.append(out["input_ids"])
        starts.append([a for a, _ in out["offset_mapping"]])
    return _pack(ids, starts)


def _encode_segments(
    texts: Sequence[str], backend: Tokenizer, pattern: re.Pattern[str] | None
) -> Encoded:
    table: dict[str, int] = {}
    segment_of: list[int] = []  # per occurrence: which distinct segment
    base_of: list[int] = []  # per occurrence: where it starts in its text
    count_of: list[int] = []  # per text: how many occurrences
    for text in texts:
        parts = pattern.split(text) if pattern is not None else [text]
        base = 0
        n = 0
        for part in parts:
            if part:
                segment_of.append(table.setdefault(part, len(table)))
                base_of.append(base)
                base += len(part)
                n += 1
        count_of.append(n)
    encodings = backend.encode_batch(list(table), add_special_tokens=False)
    segment_ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32)
    segment_starts = np.fromiter(
        (o[0] for e in encodings for o in e.offsets), dtype=np.int32, count=len(segment_ids)
    )
    segment_len = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(table))
    segment_off = np.zeros(len(table) + 1, dtype=np.int64)
    np.cumsum(segment_len, out=segment_off[1:])

    positions, occ_offsets = row_positions(segment_off, np.asarray(segment_of, dtype=np.int64))
    occ_len = np.diff(occ_offsets)
    ids = segment_ids[positions]
    starts = segment_starts[positions] + np.repeat(np.asarray(base_of, dtype=np.int32), occ_len)
    # Text i is made of occurrences [first[i], first[i + 1]).
    first = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(count_of, out=first[1:])
    return Encoded(ids, starts.astype(np.int32), occ_offsets[first])


def _agrees_with_whole_texts(texts: Sequence[str], encoded: Encoded, backend: Any) -> bool:
    """Whether the first few texts get the same ids and starts when encoded whole."""
    picked = list(range(min(_CHECKED_TEXTS, len(texts))))
    whole = backend.encode_batch([texts[i] for i in picked], add_special_tokens=False)
    for i, e in zip(picked, whole, strict=True):
        a, b = encoded.offsets[i], encoded.offsets[i + 1]
        if e.ids != encoded.ids[a:b].tolist():
            return False
        if [o[0] for o in e.offsets] != encoded.starts[a:b].tolist():
            return False
    return True


def _pack(ids: list[list[int]], starts: list[list[int]]) -> Encoded:
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat_ids = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1]))
    flat_starts = np.fromiter(chain.from_iterable(starts), dtype=np.int32, count=int(offsets[-1]))
    return Encoded(flat_ids, flat_starts, offsets)
