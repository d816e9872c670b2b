"""Evaluation metrics as pure functions: text overlap, and retrieval/reranking from scores.

Text metrics work for Chinese as for English. `text_tokens` splits CJK characters one by
one (the character level CMRC and most Chinese ROUGE reports use; no word segmenter, so no
segmenter's vocabulary decides the score) and everything else into words, after Unicode
NFKC, lower-casing and dropping punctuation. Exact match, token F1 and ROUGE-L use it; BLEU
and chrF are sacrebleu's, with BLEU's "zh" tokenizer when the references hold CJK text.

Corpus scores (`generation_scores`) are on a 0-100 scale, as sacrebleu and LLaMA-Factory
report them; retrieval scores are fractions in 0..1, as BEIR and MTEB report them.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+")
_HAS_CJK = re.compile(f"[{_CJK}]")

TEXT_METRICS = ("exact_match", "f1", "rouge_l", "bleu", "chrf")


def normalize_text(text: str) -> str:
    """NFKC, lower case, punctuation (Unicode category P*) replaced by spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)


def text_tokens(text: str) -> list[str]:
    """Each CJK character alone, other words whole, after `normalize_text`."""
    return _TOKEN.findall(normalize_text(text))


def has_cjk(text: str) -> bool:
    """Whether `text` holds a Chinese or Japanese character."""
    return _HAS_CJK.search(text) is not None


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when both give the same tokens (case, spaces and punctuation aside), else 0.0."""
    return float(text_tokens(prediction) == text_tokens(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token-overlap F1 over `text_tokens` (1.0 when both are empty)."""
    pred, ref = text_tokens(prediction), text_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class _RougeTokenizer:
    """rouge-score's tokenizer interface over `text_tokens` (its own drops CJK characters)."""

    def tokenize(self, text: str) -> list[str]:
        return text_tokens(text)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (rouge-score's longest common subsequence) over `text_tokens`."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"], tokenizer=_RougeTokenizer())
    return float(scorer.score(reference, prediction)["rougeL"].fmeasure)


def bleu_tokenizer(references: Sequence[str]) -> str:
    """sacrebleu's "zh" tokenizer when any reference holds CJK text, else "13a"."""
    return "zh" if any(has_cjk(r) for r in references) else "13a"


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's corpus BLEU-4 (0-100), tokenised by `bleu_tokenizer`."""
    import sacrebleu

    tokenize = bleu_tokenizer(references)
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)],
                                       tokenize=tokenize).score)


def corpus_chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's corpus chrF (character 6-grams, beta 2; 0-100); needs no word split."""
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)


def generation_scores(
    predictions: Sequence[str], references: Sequence[str], metrics: Sequence[str] = TEXT_METRICS
) -> dict[str, float]:
    """The asked metrics over a corpus, each 0-100: EM, F1 and ROUGE-L averaged per sample."""
    if len(predictions) != len(references) or not references:
        raise ValueError(f"expected as many predictions as references (at least one), got "
                         f"{len(predictions)} and {len(references)}")
    pairs = list(zip(predictions, references, strict=True))
    out: dict[str, float] = {}
    for name in metrics:
        if name == "exact_match":
            out[name] = 100 * sum(exact_match(p, r) for p, r in pairs) / len(pairs)
        elif name == "f1":
            out[name] = 100 * sum(token_f1(p, r) for p, r in pairs) / len(pairs)
        elif name == "rouge_l":
            out[name] = 100 * sum(rouge_l(p, r) for p, r in pairs) / len(pairs)
        elif name == "bleu":
            out[name] = corpus_bleu(predictions, references)
        elif name == "chrf":
            out[name] = corpus_chrf(predictions, references)
        else:
            raise ValueError(f"expected one of {', '.join(TEXT_METRICS)}, got {name!r}")
    return out


# -- Retrieval and reranking: pure functions over scores -----------------------------------

Scores = Mapping[str, Mapping[str, float]]  # query id -> document id -> score (higher: better)
Qrels = Mapping[str, Mapping[str, int]]  # query id -> document id -> relevance grade (>0)


def ranking(doc_scores: Mapping[str, float]) -> list[str]:
    """Document ids by descending score; ties broken by id, so rankings are reproducible."""
    return sorted(doc_scores, key=lambda d: (-doc_scores[d], d))


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """The share of the relevant documents found in the first k."""
    wanted = {d for d, grade in relevant.items() if grade > 0}
    if not wanted:
        return 0.0
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def reciprocal_rank(ranked: Sequence[str], relevant: Mapping[str, int]) -> float:
    """1 / the rank of the first relevant document, 0.0 when none is ranked."""
    for rank, doc in enumerate(ranked, start=1):
        if relevant.get(doc, 0) > 0:
            return 1 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains, grade / log2(rank + 1), as pytrec_eval (BEIR, MTEB)."""
    gains = [relevant.get(d, 0) for d in ranked[:k]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def retrieval_scores(scores: Scores, qrels: Qrels, ks: Sequence[int] = (1, 5, 10)
                     ) -> dict[str, float]:
    """recall@k for each k, MRR and nDCG@10, averaged over the queries that have qrels.

    A query with qrels but no scores counts as retrieving nothing.
    """
    queries = [q for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    if not queries:
        raise ValueError("expected at least one query with a relevant document, got none")
    ranked = {q: ranking(scores.get(q, {})) for q in queries}
    out = {f"recall@{k}": sum(recall_at_k(ranked[q], qrels[q], k) for q in queries)
           / len(queries) for k in ks}
    out["mrr"] = sum(reciprocal_rank(ranked[q], qrels[q]) for q in queries) / len(queries)
    out["ndcg@10"] = sum(ndcg_at_k(ranked[q], qrels[q], 10) for q in queries) / len(queries)
    return out


def rerank_scores(scores: Sequence[Sequence[float]], labels: Sequence[Sequence[int]]
                  ) -> dict[str, float]:
    """MRR and nDCG@10 of a reranker: per query, its candidates' scores and relevance labels."""
    if len(scores) != len(labels):
        raise ValueError(f"expected labels for each of {len(scores)} queries, got {len(labels)}")
    as_scores, as_qrels = {}, {}
    for q, (row, grades) in enumerate(zip(scores, labels, strict=True)):
        if len(row) != len(grades):
            raise ValueError(f"query {q}: expected {len(row)} labels, got {len(grades)}")
        # the candidate's index, zero-padded, keeps ties in the given order
        as_scores[str(q)] = {f"{i:06d}": float(s) for i, s in enumerate(row)}
        as_qrels[str(q)] = {f"{i:06d}": int(g) for i, g in enumerate(grades)}
    out = retrieval_scores(as_scores, as_qrels, ks=())
    return {"mrr": out["mrr"], "ndcg@10": out["ndcg@10"]}


def cosine_scores(
    query_ids: Sequence[str], queries: Sequence[Sequence[float]],
    doc_ids: Sequence[str], docs: Sequence[Sequence[float]],
) -> dict[str, dict[str, float]]:
    """Cosine similarity of every query embedding with every document embedding."""
    import numpy as np

    q = np.asarray(queries, dtype=np.float64)
    d = np.asarray(docs, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    sims = q @ d.T
    return {qid: dict(zip(doc_ids, map(float, row), strict=True))
            for qid, row in zip(query_ids, sims, strict=True)}
