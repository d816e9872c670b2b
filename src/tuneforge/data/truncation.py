"""Cutting samples to max_length the way LLaMA-Factory does.

A conversation is a list of (prompt, response) pairs, one per assistant turn; pairs are
taken in order (last first with mask_history) and each gets what `infer_seqlen` allows of
the remaining budget, so a long prompt gives way before its response does.
"""

from __future__ import annotations

import numpy as np

from tuneforge.data.conversation import Span
from tuneforge.data.tokenized import Ragged

Pair = tuple[int, int, int]
"""Token indices: where the prompt starts, where the response starts, where it ends."""


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """How much of a prompt/response pair to keep under a budget (LLaMA-Factory's rule)."""
    if target_len * 2 < cutoff_len:  # the prompt gives way
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:  # the response gives way
        max_target_len = cutoff_len - source_len
    else:  # both give way, in proportion
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def turn_pairs(starts: np.ndarray, spans: tuple[Span, ...], n: int, last_only: bool) -> list[Pair]:
    """The (prompt, response) pairs of one text of `n` tokens whose first characters are
    `starts`; with `last_only`, everything before the final response is one prompt."""
    bounds = [(int(np.searchsorted(starts, s.start)), int(np.searchsorted(starts, s.end)))
              for s in (spans[-1:] if last_only else spans)]
    pairs, previous = [], 0
    for start, end in bounds:
        pairs.append((previous, start, end))
        previous = end
    if previous < n:  # text after the last turn: a prompt with no response
        pairs.append((previous, n, n))
    return pairs


def kept_tokens(pairs: list[Pair], max_length: int, mask_history: bool) -> np.ndarray:
    """Indices of the tokens kept within `max_length`, in order."""
    kept: list[tuple[int, int]] = []
    total = 0
    for first, start, end in reversed(pairs) if mask_history else pairs:
        if total >= max_length:
            break
        source_len, target_len = infer_seqlen(start - first, end - start, max_length - total)
        kept += [(first, first + source_len), (start, start + target_len)]
        total += source_len + target_len
    kept.sort()
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in kept])


def apply_cuts(
    offsets: np.ndarray, columns: list[np.ndarray], cuts: dict[int, np.ndarray | None]
) -> tuple[list[Ragged], np.ndarray]:
    """Rows of flat `columns` with row i replaced by its tokens `cuts[i]` (None: dropped).

    Returns the new columns and which rows were kept. Rows without a cut are copied in runs.
    """
    n = len(offsets) - 1
    parts: list[list[np.ndarray]] = [[] for _ in columns]
    lengths: list[np.ndarray] = []
    is_kept = np.ones(n, dtype=bool)
    previous = 0
    for i in [*sorted(cuts), n]:
        a, b = int(offsets[previous]), int(offsets[i])
        for part, column in zip(parts, columns, strict=True):
            part.append(column[a:b])
        lengths.append(np.diff(offsets[previous : i + 1]))
        previous = i + 1
        if i == n:
            break
        keep = cuts[i]
        if keep is None:
            is_kept[i] = False
            continue
        row = slice(int(offsets[i]), int(offsets[i + 1]))
        for part, column in zip(parts, columns, strict=True):
            part.append(column[row][keep])
        lengths.append(np.array([len(keep)]))
    new_offsets = np.zeros(int(is_kept.sum()) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(lengths), out=new_offsets[1:])
    return [Ragged(np.concatenate(part), new_offsets) for part in parts], is_kept
