"""serve/encoders.py: kinds, embeddings, rerank and reward scores against the models' own
forwards (tiny random models from tests/conftest.py), and the real MiniLM (slow)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tuneforge.errors import DataError, UnsupportedError
from tuneforge.serve.encoders import EncoderEngine, encoder_kind
from tuneforge.settings import Settings

TEXTS = ["a man is eating food.", "a man is riding a horse.", "the quick brown fox"]


@pytest.fixture(scope="module")
def embedder(tiny_embedder_dir: Path) -> EncoderEngine:
    return EncoderEngine(str(tiny_embedder_dir), Settings(), max_batch=2)


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder_dir: Path) -> EncoderEngine:
    return EncoderEngine(str(tiny_cross_encoder_dir), Settings())


@pytest.fixture(scope="module")
def reward(tiny_reward_dir: Path) -> EncoderEngine:
    return EncoderEngine(str(tiny_reward_dir), Settings(), max_batch=2)


def hidden_states(model_dir: Path, texts: list[str]) -> tuple[Any, Any]:
    """The plain BERT's last hidden states and attention mask for `texts`, padded."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state, batch["attention_mask"]


def normalised(vector: Any) -> list[float]:
    return (vector / vector.norm()).tolist()


def test_kinds_are_told_from_the_directories(
        tiny_bert_dir: Path, tiny_embedder_dir: Path, tiny_cross_encoder_dir: Path,
        tiny_reward_dir: Path, tiny_reward_run: Path, tiny_llm_dir: Path) -> None:
    assert encoder_kind(tiny_embedder_dir) == "embedding"
    assert encoder_kind(tiny_bert_dir) == "embedding"  # a plain encoder: mean pooling
    assert encoder_kind(tiny_cross_encoder_dir) == "rerank"
    assert encoder_kind(tiny_reward_dir) == "reward"
    assert encoder_kind(tiny_reward_run) == "reward"  # a run dir: its output/ adapter
    assert encoder_kind(tiny_reward_run / "output") == "reward"
    assert encoder_kind(tiny_llm_dir) is None


def test_a_cross_encoder_saved_by_sentence_transformers_is_a_reranker(
        tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    CrossEncoder(str(tiny_cross_encoder_dir), local_files_only=True, device="cpu").save(
        str(tmp_path / "ce"))
    assert (tmp_path / "ce" / "modules.json").is_file()
    assert encoder_kind(tmp_path / "ce") == "rerank"
    engine = EncoderEngine(str(tmp_path / "ce"), Settings())
    direct = EncoderEngine(str(tiny_cross_encoder_dir), Settings())
    assert engine.rerank("q", ["paris", "dog"])[0] == pytest.approx(
        direct.rerank("q", ["paris", "dog"])[0], abs=1e-6)


def test_embeddings_are_normalised_and_the_same_text_gives_the_same_vector(
        embedder: EncoderEngine) -> None:
    vectors, tokens = embedder.embed([*TEXTS, TEXTS[0]])
    assert embedder.kind == "embedding"
    assert len(vectors) == 4 and len(vectors[0]) == 32
    assert all(abs(math.fsum(x * x for x in v) - 1) < 1e-5 for v in vectors)
    assert vectors[3] == pytest.approx(vectors[0], abs=1e-6)  # batched with others or not
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-3)
    assert tokens == sum(len(embedder._model.tokenizer(t)["input_ids"]) for t in [*TEXTS, TEXTS[0]])


def test_mean_pooling_averages_the_hidden_states_over_real_tokens(
        embedder: EncoderEngine, tiny_bert_dir: Path) -> None:
    states, mask = hidden_states(tiny_bert_dir, TEXTS)
    vectors, _ = embedder.embed(TEXTS)
    for i, vector in enumerate(vectors):
        real = mask[i].bool()
        assert vector == pytest.approx(normalised(states[i][real].mean(dim=0)), abs=1e-5)


def test_cls_pooling_takes_the_first_hidden_state(tiny_cls_embedder_dir: Path,
                                                   tiny_bert_dir: Path) -> None:
    states, _ = hidden_states(tiny_bert_dir, TEXTS)
    vectors, _ = EncoderEngine(str(tiny_cls_embedder_dir), Settings()).embed(TEXTS)
    for i, vector in enumerate(vectors):
        assert vector == pytest.approx(normalised(states[i][0]), abs=1e-5)


def test_a_plain_encoder_is_mean_pooled(tiny_bert_dir: Path, embedder: EncoderEngine) -> None:
    plain = EncoderEngine(str(tiny_bert_dir), Settings())
    assert plain.kind == "embedding"
    for mine, theirs in zip(plain.embed(TEXTS)[0], embedder.embed(TEXTS)[0], strict=True):
        assert mine == pytest.approx(theirs, abs=1e-6)


def test_cross_encoder_scores_are_the_models_own_logits_through_a_sigmoid(
        cross_encoder: EncoderEngine, tiny_cross_encoder_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    query, documents = "what is the capital of france?", ["paris", "the lazy dog", "hello"]
    scores, tokens = cross_encoder.rerank(query, documents)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_cross_encoder_dir))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_cross_encoder_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        logits = [float(model(**tokenizer(query, d, return_tensors="pt")).logits[0, 0])
                  for d in documents]
    assert scores == pytest.approx([1 / (1 + math.exp(-x)) for x in logits], abs=1e-5)
    assert sorted(range(3), key=lambda i: -scores[i]) == sorted(range(3), key=lambda i: -logits[i])
    assert tokens == sum(len(tokenizer(query, d)["input_ids"]) for d in documents)


def test_an_embedding_model_reranks_by_cosine_similarity(embedder: EncoderEngine) -> None:
    query, documents = TEXTS[0], TEXTS[1:]
    scores, _ = embedder.rerank(query, documents)
    q, *docs = embedder.embed([query, *documents])[0]
    by_hand = [math.fsum(a * b for a, b in zip(q, d, strict=True))
               / math.sqrt(math.fsum(a * a for a in q) * math.fsum(b * b for b in d))
               for d in docs]
    assert scores == pytest.approx(by_hand, abs=1e-6)


def test_reward_scores_equal_the_classifier_logit_whatever_the_batch(
        reward: EncoderEngine, tiny_reward_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = ["Hello there", "What is the capital of France? Paris is the capital of France.",
             "天气很好"]  # lengths differ, so a batch of 2 pads
    scores, tokens = reward.score(texts)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_reward_dir))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_reward_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        alone = [float(model(**tokenizer(t, return_tensors="pt")).logits[0, 0]) for t in texts]
    assert scores == pytest.approx(alone, abs=1e-5)
    assert tokens == sum(len(tokenizer(t)["input_ids"]) for t in texts)


def test_a_lora_reward_run_is_scored_as_its_peft_model(tiny_reward_run: Path) -> None:
    import torch
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    texts = ["Hello there", "Paris is the capital of France."]
    engine = EncoderEngine(str(tiny_reward_run), Settings())
    assert engine.kind == "reward" and engine.adapter_dir == (tiny_reward_run / "output").resolve()
    scores, _ = engine.score(texts)
    model = AutoPeftModelForSequenceClassification.from_pretrained(
        str(tiny_reward_run / "output"), num_labels=1, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_reward_run / "output"))
    with torch.no_grad():
        alone = [float(model(**tokenizer(t, return_tensors="pt")).logits[0, 0]) for t in texts]
    assert scores == pytest.approx(alone, abs=1e-5)


def test_a_method_the_model_does_not_serve_names_what_it_serves(
        embedder: EncoderEngine, cross_encoder: EncoderEngine, reward: EncoderEngine) -> None:
    with pytest.raises(UnsupportedError, match="it is an embedding model; it serves embed"):
        embedder.score(["x"])
    with pytest.raises(UnsupportedError, match="cross-encoder.*it serves rerank"):
        cross_encoder.embed(["x"])
    with pytest.raises(UnsupportedError, match="it is a reward model; it serves score"):
        reward.rerank("q", ["d"])


def test_a_causal_lm_is_refused_with_a_pointer_to_engine(tiny_llm_dir: Path) -> None:
    with pytest.raises(UnsupportedError, match="causal LM") as info:
        EncoderEngine(str(tiny_llm_dir), Settings())
    assert "Engine" in str(info.value)


def test_empty_inputs_are_data_errors_naming_every_field(
        embedder: EncoderEngine, reward: EncoderEngine) -> None:
    with pytest.raises(DataError, match="texts: expected at least one text"):
        embedder.embed([])
    with pytest.raises(DataError) as info:
        embedder.embed(["fine", "", "  "])
    assert [i.field for i in info.value.issues] == ["texts[1]", "texts[2]"]
    with pytest.raises(DataError, match="^query: expected non-empty text"):
        embedder.rerank("", ["doc"])
    with pytest.raises(DataError, match="documents: expected at least one text"):
        embedder.rerank("q", [])
    with pytest.raises(DataError, match=r"documents\[0\]"):
        embedder.rerank("q", [""])
    with pytest.raises(DataError, match=r"texts\[0\]: expected at most 512 tokens"):
        reward.score(["hello " * 600])


@pytest.mark.slow
def test_minilm_puts_bread_nearer_to_food_than_a_horse() -> None:
    engine = EncoderEngine("minilm-l6-v2", Settings())
    assert engine.kind == "embedding"
    (bread, horse), _ = engine.rerank("A man is eating food.", [
        "A man is eating a piece of bread.", "A man is riding a horse."])
    assert bread > horse
