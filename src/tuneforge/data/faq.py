"""The retrieval set the project ships: Larkspur's support FAQ, in English and Chinese.

`resources/faq/faq.jsonl` holds 200 passages (100 English, 100 Chinese, 22 topics of an
invented e-bike maker), each with two training questions and one held-out question, written
to paraphrase rather than repeat the passage. `write_faq(folder)` lays it out as the three
things a retrieval fine-tune needs:

- `train.jsonl`: FlagEmbedding rows `{"query", "pos": [passage], "neg": []}`, one per
  training question (400);
- `test.json`: a retrieval set (`{"queries", "corpus", "qrels"}`, eval/retrieval.py) of the
  200 held-out questions over all 200 passages;
- `kb/`: the passages as a knowledge base for Document/Retriever, one Markdown file per
  topic and language, one passage per line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tuneforge.paths import atomic_write


@dataclass(frozen=True)
class FaqFiles:
    """Where `write_faq` put the training rows, the held-out set and the knowledge base."""

    train: Path
    test: Path
    kb: Path


def faq_entries(lang: str | None = None) -> list[dict[str, Any]]:
    """The FAQ's entries ({id, lang, topic, passage, train_queries, test_queries})."""
    text = resources.files("tuneforge.resources").joinpath("faq/faq.jsonl").read_text("utf-8")
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [e for e in entries if lang is None or e["lang"] == lang]


def write_faq(folder: Path, lang: str | None = None) -> FaqFiles:
    """Write train.jsonl, test.json and kb/ under `folder` (`lang`: "en" or "zh" only)."""
    entries = faq_entries(lang)
    folder.mkdir(parents=True, exist_ok=True)
    train = folder / "train.jsonl"
    atomic_write(train, "".join(
        json.dumps({"query": q, "pos": [e["passage"]], "neg": []}, ensure_ascii=False) + "\n"
        for e in entries for q in e["train_queries"]))
    test = folder / "test.json"
    queries = {f"{e['id']}-q": q for e in entries for q in e["test_queries"]}
    atomic_write(test, json.dumps({
        "queries": queries, "corpus": {e["id"]: e["passage"] for e in entries},
        "qrels": {qid: {qid.removesuffix("-q"): 1} for qid in queries},
    }, ensure_ascii=False, indent=1) + "\n")
    kb = folder / "kb"
    kb.mkdir(exist_ok=True)
    topics: dict[str, list[str]] = {}
    for e in entries:
        topics.setdefault(f"{e['lang']}-{e['topic']}", []).append(e["passage"])
    for name, passages in topics.items():
        atomic_write(kb / f"{name}.md", "\n".join(passages) + "\n")
    return FaqFiles(train, test, kb)
