"""eval/metrics.py against values computed by hand, in English and Chinese."""

from __future__ import annotations

import math

import pytest

from tuneforge.eval.metrics import (
    bleu_tokenizer,
    corpus_bleu,
    corpus_chrf,
    cosine_scores,
    exact_match,
    generation_scores,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank,
    rerank_scores,
    retrieval_scores,
    rouge_l,
    text_tokens,
    token_f1,
)


def test_text_tokens_split_cjk_characters_and_keep_words_whole() -> None:
    tokens = text_tokens("Hello, 世界! Fine-ish 2024。")
    assert tokens == ["hello", "世", "界", "fine", "ish", "2024"]


def test_exact_match_ignores_case_spaces_and_punctuation() -> None:
    assert exact_match("Paris.", "  paris") == 1.0
    assert exact_match("北京。", "北京") == 1.0
    assert exact_match("Paris", "Paris France") == 0.0


def test_token_f1_english_by_hand() -> None:
    # 2 common tokens; precision 2/3, recall 2/4 -> F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2) = 4/7
    assert token_f1("the cat sat", "the cat is here") == pytest.approx(4 / 7)


def test_token_f1_chinese_counts_characters() -> None:
    # 我/喜/欢 common; precision 3/4, recall 3/5 -> F1 = 2 * 0.45 / 1.35 = 2/3
    assert token_f1("我喜欢书", "我喜欢读报") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0
    assert token_f1("a", "") == 0.0


def test_rouge_l_is_the_lcs_f_measure() -> None:
    # LCS 5 of 5 predicted and 6 reference tokens: F = 2 * 1 * 5/6 / (1 + 5/6) = 10/11
    assert rouge_l("the cat on the mat", "the cat sat on the mat") == pytest.approx(10 / 11)
    # LCS 我喜欢读 = 4 of 5 characters on both sides
    assert rouge_l("我喜欢读书", "我喜欢读报") == pytest.approx(0.8)


def test_bleu_english_by_hand() -> None:
    # n-gram precisions 5/6, 3/5, 2/4, 1/3, no brevity penalty: (1/12) ** (1/4)
    score = corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert score == pytest.approx(100 * (1 / 12) ** 0.25)


def test_bleu_chinese_uses_the_zh_tokenizer() -> None:
    assert bleu_tokenizer(["我喜欢读报"]) == "zh" and bleu_tokenizer(["a b"]) == "13a"
    # characters: precisions 4/5, 3/4, 2/3, 1/2 -> 0.2 ** (1/4); with 13a it would be 0
    assert corpus_bleu(["我喜欢读书"], ["我喜欢读报"]) == pytest.approx(100 * 0.2 ** 0.25)


def test_chrf_averages_character_ngram_f_scores_by_hand() -> None:
    # orders 1..3 have n-grams: F = 2/3, 1/2, 0 -> mean 7/18
    assert corpus_chrf(["abc"], ["abd"]) == pytest.approx(100 * 7 / 18, abs=1e-6)
    # orders 1..5: 4/5, 3/4, 2/3, 1/2, 0
    expected = 100 * (0.8 + 0.75 + 2 / 3 + 0.5) / 5
    assert corpus_chrf(["我喜欢读书"], ["我喜欢读报"]) == pytest.approx(expected, abs=1e-6)


def test_generation_scores_are_on_a_0_to_100_scale() -> None:
    scores = generation_scores(["Paris", "北京"], ["paris", "上海"])
    assert scores["exact_match"] == 50.0
    assert scores["f1"] == 50.0
    assert set(scores) == {"exact_match", "f1", "rouge_l", "bleu", "chrf"}


QRELS = {"q1": {"d1": 1, "d3": 1}, "q2": {"d2": 2}}
SCORES = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.1}, "q2": {"d1": 0.7, "d2": 0.5, "d3": 0.2}}


def test_recall_mrr_and_ndcg_of_one_query_by_hand() -> None:
    ranked = ["d1", "d2", "d3"]
    assert recall_at_k(ranked, QRELS["q1"], 1) == 0.5
    assert recall_at_k(ranked, QRELS["q1"], 3) == 1.0
    assert reciprocal_rank(["d1", "d2"], QRELS["q2"]) == 0.5
    # gains 1, 0, 1 at ranks 1..3; ideal 1, 1
    dcg, idcg = 1 + 1 / math.log2(4), 1 + 1 / math.log2(3)
    assert ndcg_at_k(ranked, QRELS["q1"]) == pytest.approx(dcg / idcg)


def test_retrieval_scores_average_over_queries() -> None:
    scores = retrieval_scores(SCORES, QRELS, ks=(1, 2))
    assert scores["recall@1"] == pytest.approx((0.5 + 0) / 2)
    assert scores["recall@2"] == pytest.approx((0.5 + 1) / 2)
    assert scores["mrr"] == pytest.approx((1 + 0.5) / 2)
    q1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    q2 = (2 / math.log2(3)) / 2
    assert scores["ndcg@10"] == pytest.approx((q1 + q2) / 2)


def test_rerank_scores_rank_candidates_by_score() -> None:
    scores = rerank_scores([[0.1, 0.9, 0.5], [0.3, 0.2]], [[0, 0, 1], [1, 0]])
    assert scores["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    assert scores["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1) / 2)


def test_cosine_scores_feed_retrieval_scores() -> None:
    scores = cosine_scores(["q"], [[1.0, 0.0]], ["a", "b"], [[0.0, 2.0], [3.0, 0.1]])
    assert scores["q"]["b"] > scores["q"]["a"] == pytest.approx(0.0)
    assert retrieval_scores(scores, {"q": {"b": 1}}, ks=(1,))["recall@1"] == 1.0
