"""The shipped FAQ retrieval set (data/faq.py) and the demo's embedding fine-tune on it: its
flow on a tiny BERT, and (slow) the real all-MiniLM-L6-v2 beating its base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.data.faq import faq_entries, write_faq
from tuneforge.eval.faq_demo import run_faq_demo
from tuneforge.eval.retrieval import read_retrieval_set
from tuneforge.settings import Settings


def test_the_faq_has_200_passages_with_distinct_questions(tmp_path: Path) -> None:
    entries = faq_entries()
    assert len(entries) == 200 and {e["lang"] for e in entries} == {"en", "zh"}
    questions = [q for e in entries for q in [*e["train_queries"], *e["test_queries"]]]
    assert len(questions) == len(set(questions)) == 600
    files = write_faq(tmp_path)
    rows = [json.loads(line) for line in files.train.read_text("utf-8").splitlines()]
    assert len(rows) == 400 and set(rows[0]) == {"query", "pos", "neg"}
    test = read_retrieval_set(files.test)
    assert (len(test.queries), len(test.corpus)) == (200, 200)
    assert not set(test.queries.values()) & {r["query"] for r in rows}  # held out
    assert len(list(files.kb.glob("*.md"))) == 44  # 22 topics x 2 languages


def test_the_demo_fine_tunes_and_compares_with_the_base(tiny_embedder_dir: Path) -> None:
    report = run_faq_demo(Settings(), model=str(tiny_embedder_dir),
                          overrides=["--max_steps", "2", "--mine_hard_negatives", "0"])
    assert [r["name"] for r in report["rows"]] == ["base", "fine-tuned"]
    assert report["samples"] == 200 and "recall@5" in report["difference"]


@pytest.mark.slow
def test_fine_tuning_minilm_beats_the_base_on_held_out_questions() -> None:
    report = run_faq_demo(Settings())
    base, tuned = (r["metrics"] for r in report["rows"])
    assert tuned["recall@5"] > base["recall@5"] and tuned["mrr"] > base["mrr"]
