"""Which tokens are learned: the template's assistant spans, chosen by the masking policy.

LLaMA-Factory's policy: every assistant turn is learned (its content plus end-of-turn text);
`mask_history` keeps only the last; `train_on_prompt` learns the prompt too; a message weight
of 0 or 1 (OpenAI) overrides both for its turn; pairwise and kto learn the final turn only.
A token is learned when its first character lies in a learned span.
"""

from __future__ import annotations

import numpy as np

from tuneforge.data.conversation import RenderedBatch
from tuneforge.data.segments import Encoded
from tuneforge.data.tokenized import IGNORE_INDEX


def learned_labels(
    encoded: Encoded, rendered: RenderedBatch, *, train_on_prompt: bool, mask_history: bool,
    last_only: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels for every token (its id when learned, else IGNORE_INDEX) and learned tokens
    per text.

    Vectorised over every token of every text: texts and their spans are laid end to end in
    one character coordinate, where token starts and span bounds are both sorted.
    """
    n = len(rendered)
    text_len = np.fromiter(map(len, rendered.texts), dtype=np.int64, count=n)
    text_base = np.cumsum(text_len) - text_len
    first = np.asarray(rendered.first, dtype=np.int64)
    spans_of = np.diff(first)
    span_text = np.repeat(np.arange(n), spans_of)
    starts = np.asarray(rendered.starts, dtype=np.int64) + text_base[span_text]
    ends = np.asarray(rendered.ends, dtype=np.int64) + text_base[span_text]
    weights = np.fromiter((-1 if w is None else w for w in rendered.weights), dtype=np.int64,
                          count=len(rendered.weights))
    is_last = np.zeros(len(starts), dtype=bool)
    is_last[first[1:][spans_of > 0] - 1] = True
    if train_on_prompt:  # everything but turns weighted 0
        chosen = (weights == 0) & (not last_only)
    elif last_only:
        chosen = is_last
    else:
        unweighted = is_last if mask_history else np.ones(len(starts), dtype=bool)
        chosen = (weights == 1) | ((weights == -1) & unweighted)
    where = np.repeat(text_base, encoded.lengths()) + encoded.starts
    lo = np.searchsorted(where, starts[chosen])
    hi = np.maximum(np.searchsorted(where, ends[chosen]), lo)
    in_span = _in_ranges(len(where), lo, hi)
    covered = np.bincount(span_text[chosen], weights=hi - lo, minlength=n).astype(np.int64)
    if train_on_prompt:
        in_span = ~in_span
        covered = encoded.lengths() - covered
    return np.where(in_span, encoded.ids, IGNORE_INDEX).astype(np.int32), covered


def _in_ranges(size: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A mask of `size` positions, True inside the sorted, disjoint ranges [lo, hi)."""
    bounds = np.empty(2 * len(lo), dtype=np.int64)
    bounds[0::2], bounds[1::2] = lo, hi
    np.maximum.accumulate(bounds, out=bounds)  # overlapping ranges (odd templates) are clipped
    runs = np.diff(bounds, prepend=0, append=size)
    inside = np.zeros(len(runs), dtype=bool)
    inside[1::2] = True
    return np.repeat(inside, runs)
