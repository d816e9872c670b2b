"""Sampling, resampling, train/eval split, corpus mixing and interleaving; seeded, so
deterministic. Plain `random.Random(seed)`: the lists are small and in memory."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from tuneforge.config.data import CorpusItem
from tuneforge.errors import ConfigError

T = TypeVar("T")


def resample(items: Sequence[T], n: int, seed: int) -> list[T]:
    """Exactly `n` items, as LLaMA-Factory's num_samples: a permutation, topped up with
    draws with replacement when n exceeds the dataset."""
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    picked = order[:n]
    picked += [rng.randrange(len(items)) for _ in range(n - len(picked))]
    return [items[i] for i in picked]


def sample(items: Sequence[T], rate: float, seed: int) -> list[T]:
    """A `rate` share of the items (at least one), original order kept."""
    if rate >= 1:
        return list(items)
    keep = max(1, round(len(items) * rate))
    chosen = sorted(random.Random(seed).sample(range(len(items)), keep))
    return [items[i] for i in chosen]


def split_eval(items: Sequence[T], percent: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, eval) with `percent` of the items held out at random; both keep file order."""
    if percent <= 0:
        return list(items), []
    n_eval = max(1, round(len(items) * percent / 100))
    if n_eval >= len(items):
        raise ConfigError.one(
            f"holding out {percent}% of {len(items)} samples leaves none to train on; "
            "expected a smaller eval_split_ratio or more data",
            field="data.eval_split_ratio",
        )
    held = set(random.Random(seed).sample(range(len(items)), n_eval))
    train = [x for i, x in enumerate(items) if i not in held]
    return train, [x for i, x in enumerate(items) if i in held]


def mix_corpus(
    user: Sequence[T], corpus: Sequence[T], item: CorpusItem, data_copy: bool, seed: int
) -> list[T]:
    """The corpus records that `item.corpus_proportion` asks for, drawn without repetition
    unless `data_copy` allows it."""
    wanted = item.amount(len(user), len(corpus))
    if wanted <= len(corpus):
        return random.Random(seed).sample(list(corpus), wanted)
    if not data_copy:
        raise ConfigError.one(
            f"corpus {item.corpus_type!r} with proportion {item.corpus_proportion} needs "
            f"{wanted} records but has {len(corpus)}; set data_copy=True to repeat records, "
            "or lower the proportion",
            field="corpus_proportion",
        )
    return resample(corpus, wanted, seed)


def interleave(
    datasets: Sequence[Sequence[T]], probs: Sequence[float] | None, strategy: str, seed: int
) -> list[T]:
    """Combine datasets as `datasets.interleave_datasets` does: draw a source by `probs`
    each step; `interleave_under` stops when one source runs out, `interleave_over` when
    every source has been fully seen once (restarting exhausted ones)."""
    if strategy == "concat":
        return [x for dataset in datasets for x in dataset]
    weights = list(probs) if probs else [1.0] * len(datasets)
    rng = random.Random(seed)
    positions = [0] * len(datasets)
    done = [False] * len(datasets)
    out: list[T] = []
    while True:
        source = rng.choices(range(len(datasets)), weights=weights)[0]
        dataset = datasets[source]
        if positions[source] >= len(dataset):
            if strategy == "interleave_under":
                return out
            done[source] = True
            positions[source] = 0
            if all(done):
                return out
        out.append(dataset[positions[source]])
        positions[source] += 1
