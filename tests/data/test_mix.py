"""data/mix.py and the mixing done by load_data: deterministic under a seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.config import CorpusItem, load_run_config
from tuneforge.data import mix
from tuneforge.data.load import load_data
from tuneforge.errors import ConfigError, DataError


def alpaca_file(path: Path, n: int, tag: str, labels: list[str] | None = None) -> Path:
    rows = []
    for i in range(n):
        row = {"instruction": f"{tag} {i}", "input": "", "output": "ok"}
        if labels:
            row["labels"] = labels[i % len(labels)]
        rows.append(row)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def prompts(examples) -> list[str]:
    return [e.messages[0].content for e in examples]


def test_resample_to_exactly_n_with_and_without_repetition() -> None:
    items = list(range(10))
    assert sorted(mix.resample(items, 10, 0)) == items
    assert len(set(mix.resample(items, 4, 0))) == 4
    bigger = mix.resample(items, 25, 0)
    assert len(bigger) == 25 and set(bigger) == set(items)
    assert mix.resample(items, 25, 0) == bigger


def test_split_eval_is_a_percent_and_seeded() -> None:
    train, held = mix.split_eval(list(range(100)), 20, seed=3)
    assert (len(train), len(held)) == (80, 20)
    assert set(train) | set(held) == set(range(100))
    assert mix.split_eval(list(range(100)), 20, seed=3) == (train, held)
    assert mix.split_eval(list(range(100)), 20, seed=4)[1] != held


def test_split_leaving_nothing_to_train_is_an_error() -> None:
    with pytest.raises(ConfigError, match="leaves none to train"):
        mix.split_eval([1], 50, seed=0)


def test_sampling_rate_keeps_a_share_in_order() -> None:
    kept = mix.sample(list(range(100)), 0.1, seed=0)
    assert len(kept) == 10 and kept == sorted(kept)


@pytest.mark.parametrize(("proportion", "expected"), [("1:2", 20), ("1:0.5", 5), ("50%", 15)])
def test_corpus_proportions(proportion: str, expected: int) -> None:
    item = CorpusItem(corpus_type="c", corpus_proportion=proportion)
    picked = mix.mix_corpus(list(range(10)), list(range(100, 130)), item, False, seed=0)
    assert len(picked) == expected


def test_short_corpus_needs_data_copy() -> None:
    item = CorpusItem(corpus_type="c", corpus_proportion="1:5")
    with pytest.raises(ConfigError, match="needs 50 records but has 30"):
        mix.mix_corpus(list(range(10)), list(range(30)), item, False, seed=0)
    assert len(mix.mix_corpus(list(range(10)), list(range(30)), item, True, seed=0)) == 50


def test_bad_proportion_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match='expected "1:x" or "x%"'):
        load_run_config(values={"corpus_config": {"corpus_configs": [
            {"corpus_type": "c", "corpus_proportion": "half"}]}})


def test_interleave_under_and_over() -> None:
    a, b = list(range(10)), list(range(100, 103))
    under = mix.interleave([a, b], [0.5, 0.5], "interleave_under", seed=0)
    assert len(under) < len(a) + len(b)
    over = mix.interleave([a, b], [0.5, 0.5], "interleave_over", seed=0)
    assert set(a) <= set(over) and set(b) <= set(over)
    assert mix.interleave([a, b], None, "concat", seed=0) == a + b


def test_load_data_mixes_corpora_deterministically(tmp_path: Path) -> None:
    user = alpaca_file(tmp_path / "user.jsonl", 10, "user")
    corpus = alpaca_file(tmp_path / "corpus.jsonl", 40, "corpus")
    values = {"dataset": str(user), "seed": 7, "corpus_config": {"corpus_configs": [
        {"corpus_type": str(corpus), "corpus_proportion": "1:2"}]}}
    config = load_run_config(values=values)
    bundle = load_data(config.data, seed=config.training.seed)
    assert len(bundle.train) == 30
    assert sum(p.startswith("corpus") for p in prompts(bundle.train)) == 20
    again = load_data(config.data, seed=config.training.seed)
    assert prompts(again.train) == prompts(bundle.train)


def test_corpus_labels_select_rows(tmp_path: Path) -> None:
    user = alpaca_file(tmp_path / "user.jsonl", 4, "user")
    corpus = alpaca_file(tmp_path / "corpus.jsonl", 20, "corpus", labels=["文本创作", "翻译"])
    config = load_run_config(values={"dataset": str(user), "corpus_config": {"corpus_configs": [
        {"corpus_type": str(corpus), "corpus_proportion": "1:2", "corpus_labels": ["翻译"]}]}})
    bundle = load_data(config.data)
    mixed = [int(p.split()[1]) for p in prompts(bundle.train) if p.startswith("corpus")]
    assert len(mixed) == 8 and all(i % 2 == 1 for i in mixed)


def test_corpus_labels_matching_nothing(tmp_path: Path) -> None:
    user = alpaca_file(tmp_path / "user.jsonl", 4, "user")
    corpus = alpaca_file(tmp_path / "corpus.jsonl", 4, "corpus", labels=["a"])
    config = load_run_config(values={"dataset": str(user), "corpus_config": {"corpus_configs": [
        {"corpus_type": str(corpus), "corpus_proportion": "1:1", "corpus_labels": ["b"]}]}})
    with pytest.raises(DataError, match="carry the labels"):
        load_data(config.data)


def test_sampling_split_and_max_samples_through_config(tmp_path: Path) -> None:
    path = alpaca_file(tmp_path / "d.jsonl", 200, "x")
    config = load_run_config(values={"dataset": str(path), "max_samples": 100,
                                     "sampling_rate": 0.5, "eval_split_ratio": 20})
    bundle = load_data(config.data)
    assert (len(bundle.train), len(bundle.eval)) == (40, 10)
    assert all(int(p.split()[1]) < 100 for p in prompts(bundle.train + bundle.eval))


def test_mixing_kinds_is_an_error(tmp_path: Path) -> None:
    sft = alpaca_file(tmp_path / "d.jsonl", 2, "x")
    text = tmp_path / "t.txt"
    text.write_text("a\nb\n")
    config = load_run_config(values={"dataset": [str(sft), str(text)]})
    with pytest.raises(DataError, match="different kinds"):
        load_data(config.data)


def test_interleave_probs_need_one_per_dataset() -> None:
    with pytest.raises(ConfigError, match="one probability per dataset"):
        load_run_config(values={"dataset": "a,b", "mix_strategy": "interleave_under",
                                "interleave_probs": "0.5"})
