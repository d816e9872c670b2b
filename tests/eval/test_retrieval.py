"""eval/retrieval.py and `tuneforge eval` on embedding models and rerankers (tiny BERTs).

The hand-computed sets lean on one fact: a text embedded twice gives the same unit vector,
so a document that repeats the query has cosine 1 and ranks first (the other document has
cosine < 1); with two documents the whole ranking is then known.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tuneforge.cli.main import main
from tuneforge.config import load_run_config
from tuneforge.config.eval import build_eval_config
from tuneforge.errors import ConfigError, DataError, UnsupportedError
from tuneforge.eval.metrics import rerank_scores
from tuneforge.eval.retrieval import read_retrieval_set
from tuneforge.eval.run import evaluate
from tuneforge.settings import Settings

FOOD = "a man is eating food."
FOX = "the quick brown fox jumps over the lazy dog"
HELLO = "hello there"
RETRIEVAL = {
    "queries": {"q1": FOOD, "q2": FOX, "q3": FOOD},
    "corpus": {"d1": FOOD, "d2": FOX},
    # q1 finds d1 first; q2 finds d2 (its copy) before the relevant d1; q3 grades both
    "qrels": {"q1": {"d1": 1}, "q2": {"d1": 1}, "q3": {"d1": 2, "d2": 1}},
}
ONE_OVER_LOG3 = 1 / math.log2(3)  # the gain of rank 2
RETRIEVAL_EXPECTED = {
    "recall@1": (1 + 0 + 0.5) / 3, "recall@5": 1.0, "recall@10": 1.0,
    "mrr": (1 + 0.5 + 1) / 3, "ndcg@10": (1 + ONE_OVER_LOG3 + 1) / 3,
}
RERANK = [
    {"query": FOOD, "pos": [FOOD], "neg": [FOX]},  # the positive repeats the query: rank 1
    {"query": FOX, "pos": [FOOD], "neg": [FOX]},  # the negative repeats it: positive rank 2
    {"query": HELLO, "pos": [HELLO, FOX]},  # both relevant
]
RERANK_EXPECTED = {"mrr": (1 + 0.5 + 1) / 3, "ndcg@10": (1 + ONE_OVER_LOG3 + 1) / 3}


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def config(data: Path | str, model: Path, **values: Any) -> Any:
    return load_run_config(values={"model_name_or_path": str(model), "dataset": str(data),
                                   **values}, source="test")


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    """RETRIEVAL as a BEIR folder; d2's text is split into a title and a text."""
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "queries.jsonl").write_text(jsonl(
        [{"_id": q, "text": t} for q, t in RETRIEVAL["queries"].items()]))
    (folder / "corpus.jsonl").write_text(jsonl([
        {"_id": "d1", "title": "", "text": FOOD},
        {"_id": "d2", "title": "the quick brown fox", "text": "jumps over the lazy dog"}]))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q, docs in RETRIEVAL["qrels"].items() for d, g in docs.items()))
    return folder


def test_an_embedding_model_on_a_retrieval_json_gives_the_hand_computed_metrics(
        write: Callable[..., Path], tiny_embedder_dir: Path) -> None:
    path = write("retrieval.json", RETRIEVAL)
    result = evaluate(config(path, tiny_embedder_dir), build_eval_config({}), Settings())
    assert (result["kind"], result["samples"], result["documents"]) == ("retrieval", 3, 2)
    assert result["rows"][0]["metrics"] == pytest.approx(RETRIEVAL_EXPECTED, abs=1e-9)


def test_a_beir_folder_reads_as_the_same_set(beir: Path, write: Callable[..., Path],
                                             tiny_embedder_dir: Path) -> None:
    assert read_retrieval_set(beir) == read_retrieval_set(write("r.json", RETRIEVAL))
    result = evaluate(config(beir, tiny_embedder_dir),
                      build_eval_config({"metrics": "mrr,ndcg@10"}), Settings())
    assert result["rows"][0]["metrics"] == pytest.approx(
        {k: RETRIEVAL_EXPECTED[k] for k in ("mrr", "ndcg@10")}, abs=1e-9)


def test_qrels_as_lists_of_ids_count_each_as_grade_one(write: Callable[..., Path]) -> None:
    data = {**RETRIEVAL, "qrels": {"q1": ["d1"], "q2": ["d1", "d2"]}}
    assert read_retrieval_set(write("r.json", data)).qrels == {
        "q1": {"d1": 1}, "q2": {"d1": 1, "d2": 1}}


def test_an_embedding_model_on_a_rerank_set_ranks_by_cosine(
        write: Callable[..., Path], tiny_embedder_dir: Path) -> None:
    path = write("rerank.jsonl", jsonl(RERANK))
    result = evaluate(config(path, tiny_embedder_dir), build_eval_config({}), Settings())
    assert (result["kind"], result["samples"], result["documents"]) == ("rerank", 3, 6)
    assert result["rows"][0]["metrics"] == pytest.approx(RERANK_EXPECTED, abs=1e-9)


def test_a_cross_encoder_scores_as_its_own_logits_rank(
        write: Callable[..., Path], tiny_cross_encoder_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = write("rerank.jsonl", jsonl(RERANK))
    result = evaluate(config(path, tiny_cross_encoder_dir), build_eval_config({}), Settings())
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_cross_encoder_dir))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_cross_encoder_dir), dtype=torch.float32).eval()

    def logit(query: str, passage: str) -> float:
        with torch.no_grad():
            return float(model(**tokenizer(query, passage, return_tensors="pt")).logits[0, 0])

    scores = [[logit(r["query"], p) for p in [*r.get("neg", []), *r["pos"]]] for r in RERANK]
    labels = [[0] * len(r.get("neg", [])) + [1] * len(r["pos"]) for r in RERANK]
    assert result["rows"][0]["metrics"] == pytest.approx(rerank_scores(scores, labels),
                                                         abs=1e-9)


def test_compare_base_writes_both_rows_and_the_report(
        write: Callable[..., Path], tiny_embedder_dir: Path, tiny_cls_embedder_dir: Path,
        tmp_path: Path) -> None:
    options = build_eval_config({"adapter": str(tiny_cls_embedder_dir), "compare_base": True,
                                 "output_dir": str(tmp_path / "report")})
    result = evaluate(config(write("r.json", RETRIEVAL), tiny_embedder_dir), options,
                      Settings())
    assert [r["name"] for r in result["rows"]] == ["base", "fine-tuned"]
    assert set(result["difference"]) == set(RETRIEVAL_EXPECTED)
    assert {Path(f).name for f in result["files"]} == {"report.json", "report.md",
                                                         "report.png"}
    assert json.loads((tmp_path / "report" / "report.json").read_text())["kind"] == "retrieval"
    table = (tmp_path / "report" / "report.md").read_text()
    assert "| model | recall@1 | recall@5 | recall@10 | mrr | ndcg@10 |" in table
    assert "| base |" in table and "| fine-tuned |" in table and "| difference |" in table


def test_retrieval_json_problems_are_listed_with_their_fields(
        write: Callable[..., Path]) -> None:
    data = {"queries": {"q1": FOOD, "q2": ""}, "corpus": {"d1": FOOD},
            "qrels": {"q1": {"d1": 1, "d9": 1}, "q7": {"d1": 1}, "q2": {"d1": "1"}}}
    path = write("bad.json", data)
    with pytest.raises(DataError) as info:
        read_retrieval_set(path)
    assert [(i.file, i.field) for i in info.value.issues] == [
        (str(path), "queries.q2"), (str(path), "qrels.q2.d1"), (str(path), "qrels.q1.d9"),
        (str(path), "qrels.q7")]


def test_beir_problems_name_the_file_and_line(beir: Path) -> None:
    with (beir / "corpus.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "d3", "title": "no text"}) + "\n")
    with (beir / "qrels" / "test.tsv").open("a") as f:
        f.write("q1\td2\tvery\nq9\td1\t1\n")
    with pytest.raises(DataError) as info:
        read_retrieval_set(beir)
    assert [(Path(i.file).name, i.line, i.field) for i in info.value.issues] == [
        ("corpus.jsonl", 3, "text"), ("test.tsv", 6, "score"), ("test.tsv", 7, "qrels.q9")]


def test_rerank_rows_are_checked_strictly_with_lines(write: Callable[..., Path],
                                                     tiny_embedder_dir: Path) -> None:
    rows = jsonl([RERANK[0], {"pos": [FOOD]}, {"query": FOX, "pos": [FOOD, 3]}])
    with pytest.raises(DataError) as info:
        evaluate(config(write("bad.jsonl", rows), tiny_embedder_dir), build_eval_config({}),
                 Settings())
    assert [(i.line, i.field) for i in info.value.issues] == [(2, "query"), (3, "pos[1]")]


def test_a_reranker_is_refused_on_a_retrieval_set(write: Callable[..., Path],
                                                  tiny_cross_encoder_dir: Path) -> None:
    with pytest.raises(UnsupportedError, match="reranker on a retrieval set"):
        evaluate(config(write("r.json", RETRIEVAL), tiny_cross_encoder_dir),
                 build_eval_config({}), Settings())


def test_a_metric_that_does_not_fit_the_set_is_a_config_error(
        write: Callable[..., Path], tiny_embedder_dir: Path) -> None:
    with pytest.raises(ConfigError, match="expected metrics among mrr, ndcg@10 for a rerank"):
        evaluate(config(write("r.jsonl", jsonl(RERANK)), tiny_embedder_dir),
                 build_eval_config({"metrics": "recall@1"}), Settings())
    with pytest.raises(ConfigError, match="got accuracy"):
        evaluate(config(write("r.json", RETRIEVAL), tiny_embedder_dir),
                 build_eval_config({"metrics": "accuracy"}), Settings())


def test_a_reward_model_is_not_evaluated_yet(write: Callable[..., Path],
                                             tiny_reward_dir: Path) -> None:
    with pytest.raises(UnsupportedError, match="reward model"):
        evaluate(config(write("r.jsonl", jsonl(RERANK)), tiny_reward_dir),
                 build_eval_config({}), Settings())


def test_cli_scores_a_retrieval_set(write: Callable[..., Path], tiny_embedder_dir: Path,
                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write("retrieval.json", RETRIEVAL)
    with pytest.raises(SystemExit) as info:
        main(["eval", "--model", str(tiny_embedder_dir), "--dataset", str(path),
              "--metrics", "mrr,ndcg@10", "--output_dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "0.8333" in out and "retrieval" in out
    assert (tmp_path / "out" / "report.md").is_file()
