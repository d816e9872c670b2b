"""Packing SFT samples: several per sequence, attention kept inside each by position ids.

Bins are filled greedily, largest sample that still fits first (LLaMA-Factory's
`greedy_knapsack`), and are not padded: the collator pads a batch to its longest row.
Position ids restart at 0 for every sample, which transformers' attention uses to keep each
sample attending only to itself (flash-attention varlen or the packed-sequence mask).
"""

from __future__ import annotations

import bisect
from itertools import chain

import numpy as np

from tuneforge.data.tokenized import IGNORE_INDEX, Ragged, row_positions


def greedy_knapsack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins whose lengths sum to at most `capacity`."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    sizes = [lengths[i] for i in order]
    if sizes and sizes[-1] > capacity:
        raise ValueError(f"a sample of {sizes[-1]} tokens does not fit in {capacity}")
    bins: list[list[int]] = []
    while order:
        remaining = capacity
        current: list[int] = []
        while (k := bisect.bisect(sizes, remaining) - 1) >= 0:
            remaining -= sizes.pop(k)
            current.append(order.pop(k))
        bins.append(current)
    return bins


def pack(input_ids: Ragged, labels: Ragged, capacity: int) -> dict[str, Ragged]:
    """input_ids, labels and position_ids of the packed sequences."""
    lengths = input_ids.lengths()
    bins = greedy_knapsack(lengths.tolist(), capacity)
    order = np.fromiter(chain.from_iterable(bins), dtype=np.int64, count=len(lengths))
    source, row_offsets = row_positions(input_ids.offsets, order)
    row_start = row_offsets[:-1]
    packed_labels = labels.values[source]
    # The first token of a sample must not be predicted from the previous sample's last one.
    packed_labels[row_start[lengths[order] > 0]] = IGNORE_INDEX
    positions = np.arange(len(source), dtype=np.int64) - np.repeat(row_start, lengths[order])
    bin_len = np.fromiter((int(lengths[b].sum()) for b in bins), dtype=np.int64, count=len(bins))
    offsets = np.zeros(len(bins) + 1, dtype=np.int64)
    np.cumsum(bin_len, out=offsets[1:])
    return {
        "input_ids": Ragged(input_ids.values[source], offsets),
        "labels": Ragged(packed_labels, offsets),
        "position_ids": Ragged(positions.astype(np.int32), offsets),
    }
