"""lazy/rag.py: Document, Retriever and Reranker over small folders, with toy models.

The toy embedding is a hashed bag of words (crc32, so the same in every process): texts
sharing more words have a higher cosine, and a text equal to the query scores 1.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tuneforge.errors import ConfigError, DataError, NotFoundError, UnsupportedError
from tuneforge.lazy._bm25 import bm25_tokens
from tuneforge.lazy.rag import ROOT_GROUP, Document, Reranker, Retriever

DIM = 512


def bag_of_words(text: str) -> np.ndarray:
    """A hashed bag-of-words vector of `text` (lower-cased words)."""
    vector = np.zeros(DIM)
    for word in re.findall(r"\w+", text.lower()):
        vector[zlib.crc32(word.encode()) % DIM] += 1.0
    return vector


class ToyEmbed:
    """An embedding model with `embed_texts`; records every batch it was asked."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return np.stack([bag_of_words(t) for t in texts])


class ToyTrainableEmbed(ToyEmbed):
    """Untrained, every text gets the same vector; `update()` trains it into bag of words."""

    def __init__(self) -> None:
        super().__init__()
        self.needs_update = True
        self.updates = 0

    def update(self) -> None:
        self.updates += 1
        self.needs_update = False

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if self.needs_update:
            self.batches.append(list(texts))
            return np.ones((len(texts), DIM))
        return super().embed_texts(texts)


@pytest.fixture
def kb(tmp_path: Path) -> Path:
    """An English knowledge base: two files, one in a subfolder, plus files to skip."""
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "fruit.md").write_text(
        "apples are red fruit\nbananas are yellow fruit\n\n   \ncherries are small red fruit\n",
        encoding="utf-8")
    (root / "sub" / "nature.txt").write_text(
        "the sky is blue\ngrass is green and soft", encoding="utf-8")
    (root / ".hidden" / "secret.md").write_text("apples apples apples", encoding="utf-8")
    (root / "image.pdf").write_bytes(b"%PDF")
    return root


@pytest.fixture
def zh_kb(tmp_path: Path) -> Path:
    """A Chinese knowledge base, one sentence a line."""
    root = tmp_path / "zh"
    root.mkdir()
    (root / "zh.md").write_text("苹果是一种红色的水果\n今天的天空是蓝色的\n小猫喜欢吃鱼\n",
                                encoding="utf-8")
    return root


def lines(text: str) -> list[str]:
    return text.split("\n")


def texts(nodes: Sequence[object]) -> list[str]:
    return [str(n) for n in nodes]


# -- Document --------------------------------------------------------------------------------


def test_document_reads_txt_and_md_recursively_in_sorted_order_skipping_hidden(kb: Path
                                                                                ) -> None:
    docs = Document(kb, manager=False)
    assert [p.relative_to(kb).as_posix() for p in docs.files] == ["fruit.md", "sub/nature.txt"]
    roots = docs.nodes()
    assert [n.metadata["file_name"] for n in roots] == ["fruit.md", "nature.txt"]
    assert roots[1].text == "the sky is blue\ngrass is green and soft"
    assert roots[1].metadata["path"] == str((kb / "sub" / "nature.txt").resolve())
    assert roots[0].group == ROOT_GROUP and roots[0].parent is None
    assert docs.groups == (ROOT_GROUP,)


def test_node_group_splits_each_file_and_drops_blank_pieces(kb: Path) -> None:
    docs = Document(kb)
    docs.create_node_group(name="split_sent", transform=lines)
    nodes = docs.nodes("split_sent")
    assert texts(nodes) == ["apples are red fruit", "bananas are yellow fruit",
                            "cherries are small red fruit", "the sky is blue",
                            "grass is green and soft"]
    assert [n.metadata["index"] for n in nodes] == [0, 1, 2, 0, 1]
    assert nodes[3].metadata["file_name"] == "nature.txt"
    assert nodes[3].parent is docs.nodes()[1]
    assert nodes[0].get_text() == nodes[0].get_content() == "apples are red fruit"
    assert nodes[0].similarity_score is None
    assert "fruit.md" in repr(nodes[0])


def test_node_group_from_a_parent_group_splits_the_parent_nodes(kb: Path) -> None:
    docs = Document(kb)
    docs.create_node_group(name="split_sent", transform=lines)
    docs.create_node_group(name="words", transform=str.split, parent="split_sent")
    words = docs.nodes("words")
    assert texts(words[:4]) == ["apples", "are", "red", "fruit"]
    assert words[4].text == "bananas" and words[4].metadata["index"] == 0
    assert words[4].parent is not None and words[4].parent.text == "bananas are yellow fruit"
    assert words[4].parent.parent is docs.nodes()[0]
    assert docs.groups == (ROOT_GROUP, "split_sent", "words")


# -- cosine ----------------------------------------------------------------------------------


def test_cosine_ranks_best_first_and_keeps_topk(kb: Path) -> None:
    docs = Document(kb, embed=ToyEmbed())
    docs.create_node_group(name="split_sent", transform=lines)
    retriever = Retriever(doc=docs, group_name="split_sent", similarity="cosine", topk=2)
    nodes = retriever("which fruit is red")
    assert texts(nodes) == ["apples are red fruit", "cherries are small red fruit"]
    assert nodes[0].similarity_score is not None and nodes[1].similarity_score is not None
    assert 1.0 >= nodes[0].similarity_score > nodes[1].similarity_score > 0
    assert texts(Retriever(docs, "split_sent", topk=1).forward("the sky is blue")) == [
        "the sky is blue"]
    assert Retriever(docs, "split_sent", topk=1)("the sky is blue")[0].similarity_score == (
        pytest.approx(1.0))


def test_returned_nodes_are_scored_copies_not_the_shared_index_nodes(kb: Path) -> None:
    docs = Document(kb, embed=ToyEmbed())
    docs.create_node_group(name="split_sent", transform=lines)
    best = Retriever(docs, "split_sent", topk=1)("the sky is blue")[0]
    assert best.similarity_score == pytest.approx(1.0)
    shared = docs.nodes("split_sent")[3]
    assert best is not shared and shared.similarity_score is None
    best.metadata["note"] = "mine"
    assert "note" not in shared.metadata
    assert best.parent is shared.parent


def test_a_per_text_callable_embed_and_json_text_vectors_work(kb: Path) -> None:
    def embed(text: str) -> str:  # LazyLLM's deployed modules answer JSON text
        return json.dumps(bag_of_words(text).tolist())

    docs = Document(kb, embed=embed)
    docs.create_node_group(name="split_sent", transform=lines)
    assert texts(Retriever(docs, "split_sent", topk=1)("green grass")) == [
        "grass is green and soft"]


def test_index_is_shared_by_retrievers_and_embedded_in_batches(kb: Path) -> None:
    embed = ToyEmbed()
    docs = Document(kb, embed=embed, embed_batch_size=2)
    docs.create_node_group(name="split_sent", transform=lines)
    Retriever(docs, "split_sent", topk=1)("red")
    assert [len(b) for b in embed.batches] == [2, 2, 1, 1]  # 5 nodes, then the query
    Retriever(docs, "split_sent", topk=3)("blue")
    assert [len(b) for b in embed.batches] == [2, 2, 1, 1, 1]  # only the new query


# -- bm25 ------------------------------------------------------------------------------------


def test_bm25_tokens_split_chinese_into_characters_and_bigrams() -> None:
    assert bm25_tokens("Hello, World! 世界和平。OK") == [
        "hello", "world", "世", "界", "和", "平", "世界", "界和", "和平", "ok"]


def test_bm25_ranks_english_by_shared_words_without_an_embed(kb: Path) -> None:
    docs = Document(kb)
    docs.create_node_group(name="split_sent", transform=lines)
    retriever = Retriever(docs, "split_sent", similarity="bm25", topk=6)
    nodes = retriever("Small RED fruit?")
    assert texts(nodes) == ["cherries are small red fruit", "apples are red fruit",
                            "bananas are yellow fruit"]
    scores = [n.similarity_score for n in nodes]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    assert retriever("nothing matches here") == []


def test_bm25_ranks_chinese_text(zh_kb: Path) -> None:
    docs = Document(zh_kb)
    docs.create_node_group(name="split_sent", transform=lines)
    retriever = Retriever(docs, "split_sent", similarity="bm25", topk=1)
    assert texts(retriever("什么水果是红色的")) == ["苹果是一种红色的水果"]
    assert texts(retriever("天空")) == ["今天的天空是蓝色的"]
    assert texts(retriever("猫")) == ["小猫喜欢吃鱼"]


def test_similarity_cut_off_drops_nodes_scoring_below_it(kb: Path) -> None:
    docs = Document(kb, embed=ToyEmbed())
    docs.create_node_group(name="split_sent", transform=lines)
    every = Retriever(docs, "split_sent", topk=6)("red fruit")
    assert len(every) == 5
    scores = [n.similarity_score or 0.0 for n in every]
    cut = scores[1]
    assert scores[0] >= cut > scores[2]
    kept = Retriever(docs, "split_sent", topk=6, similarity_cut_off=cut)("red fruit")
    assert texts(kept) == texts(every[:2])


# -- rerankers -------------------------------------------------------------------------------


def test_reranker_reorders_the_candidates_and_its_scores_are_returned(tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    (root / "many.txt").write_text("\n".join(f"fruit number {i}" for i in range(30)),
                                   encoding="utf-8")
    seen: list[list[str]] = []

    def longest_first(query: str, candidates: list[str]) -> list[float]:
        seen.append(candidates)
        return [float(len(c)) for c in candidates]

    docs = Document(root)
    docs.create_node_group(name="split_sent", transform=lines)
    plain = Retriever(docs, "split_sent", similarity="bm25", topk=2)("fruit number 3")
    assert texts(plain)[0] == "fruit number 3"
    nodes = Retriever(docs, "split_sent", similarity="bm25", topk=2,
                      reranker=longest_first)("fruit number 3")
    assert len(seen) == 1 and len(seen[0]) == 20  # max(topk * 4, 20) candidates
    assert [len(t) for t in texts(nodes)] == [15, 15]
    assert [n.similarity_score for n in nodes] == [15.0, 15.0]


def test_reranker_class_limits_results_to_its_topk_and_reranks_nodes(kb: Path) -> None:
    class ByWordCount:
        def rerank(self, query: str, texts: list[str]) -> list[float]:
            return [float(len(t.split())) for t in texts]

    docs = Document(kb, embed=ToyEmbed())
    docs.create_node_group(name="split_sent", transform=lines)
    reranker = Reranker(ByWordCount(), topk=1)
    nodes = Retriever(docs, "split_sent", topk=3, reranker=reranker)("red fruit")
    assert texts(nodes) == ["cherries are small red fruit"]
    assert nodes[0].similarity_score == 5.0
    assert texts(reranker(docs.nodes("split_sent"), query="q")) == [
        "cherries are small red fruit"]


# -- update ----------------------------------------------------------------------------------


def test_update_trains_the_embed_exactly_once_then_indexes(kb: Path) -> None:
    embed = ToyTrainableEmbed()
    docs = Document(kb, embed=embed, manager=False)
    docs.create_node_group(name="split_sent", transform=lambda s: s.split("\n"))
    retriever = Retriever(doc=docs, group_name="split_sent", similarity="cosine", topk=1)
    untrained = retriever("the sky is blue")  # indexed lazily with the untrained vectors
    assert untrained[0].similarity_score == pytest.approx(1.0)
    assert texts(untrained) == ["apples are red fruit"]  # all tie: the first node
    retriever.update()
    assert embed.updates == 1
    assert texts(retriever("the sky is blue")) == ["the sky is blue"]
    embedded = sum(len(b) for b in embed.batches)
    retriever.update()
    assert embed.updates == 1  # trained already: only re-indexed
    assert sum(len(b) for b in embed.batches) == embedded + 5


def test_update_trains_a_trainable_reranker_model_and_skips_bm25s_unused_embed(
        kb: Path) -> None:
    class TrainableReranker:
        def __init__(self) -> None:
            self.needs_update = True
            self.updates = 0

        def update(self) -> None:
            self.updates += 1
            self.needs_update = False

        def rerank(self, query: str, texts: list[str]) -> list[float]:
            return [0.0] * len(texts)

    embed, model = ToyTrainableEmbed(), TrainableReranker()
    docs = Document(kb, embed=embed)
    docs.create_node_group(name="split_sent", transform=lines)
    Retriever(docs, "split_sent", similarity="bm25", reranker=Reranker(model, topk=2)).update()
    assert model.updates == 1 and embed.updates == 0


# -- errors ----------------------------------------------------------------------------------


def test_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as err:
        Document(tmp_path / "nope")
    assert str(err.value) == (f"knowledge base folder not found: '{tmp_path / 'nope'}' "
                              f"(Document(dataset_path) expects a folder of .txt and .md files)")


def test_folder_without_text_files_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "data.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataError) as err:
        Document(tmp_path / "empty")
    assert str(err.value) == (f"{tmp_path / 'empty'}: expected at least one .txt or .md file "
                              f"in the folder or its subfolders, found none")
    (tmp_path / "one.md").write_text("text", encoding="utf-8")
    with pytest.raises(DataError, match="expected a folder of .txt and .md files, got a file"):
        Document(tmp_path / "one.md")


def test_file_that_is_not_utf8_is_a_data_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"ok \xff")
    with pytest.raises(DataError) as err:
        Document(tmp_path).nodes()
    assert str(err.value) == f"{tmp_path / 'bad.txt'}: expected UTF-8 text, got an invalid " \
                             f"byte at offset 3"


def test_unknown_group_lists_the_groups(kb: Path) -> None:
    docs = Document(kb)
    docs.create_node_group(name="split_sent", transform=lines)
    with pytest.raises(ConfigError) as err:
        Retriever(docs, "sentences", similarity="bm25")
    assert str(err.value) == "group_name: expected one of lazyllm_root, split_sent, " \
                             "got 'sentences'"
    with pytest.raises(ConfigError, match="parent: expected one of lazyllm_root, split_sent"):
        docs.create_node_group(name="words", transform=str.split, parent="nope")
    with pytest.raises(ConfigError, match="name: expected a new group name, got 'split_sent'"):
        docs.create_node_group(name="split_sent", transform=lines)


def test_unknown_similarity_lists_the_valid_ones(kb: Path) -> None:
    with pytest.raises(ConfigError) as err:
        Retriever(Document(kb, embed=ToyEmbed()), ROOT_GROUP, similarity="dot")
    assert str(err.value) == "similarity: expected one of cosine, bm25, got 'dot'"
    assert err.value.field == "similarity"


def test_cosine_without_an_embed_says_what_to_do(kb: Path) -> None:
    with pytest.raises(ConfigError) as err:
        Retriever(Document(kb), ROOT_GROUP, similarity="cosine")
    assert str(err.value) == ("similarity: similarity='cosine' needs Document(embed=...), got "
                              "embed=None; pass an embedding model or use similarity='bm25'")


def test_wrong_arguments_and_model_answers_are_reported(kb: Path) -> None:
    with pytest.raises(UnsupportedError, match=r"Document\(manager=True\)"):
        Document(kb, manager=True)
    with pytest.raises(UnsupportedError, match=r"Retriever\(output_format=...\)"):
        Retriever(Document(kb), ROOT_GROUP, similarity="bm25", output_format="content")
    with pytest.raises(ConfigError, match="topk: expected an integer >= 1, got 0"):
        Retriever(Document(kb), ROOT_GROUP, similarity="bm25", topk=0)
    with pytest.raises(ConfigError, match="embed: expected a callable"):
        Document(kb, embed={"dense": "bge"})
    docs = Document(kb, embed=lambda text: [1.0, 2.0] if "apples" in text else [1.0])
    with pytest.raises(ConfigError, match="embed: expected 2 finite vectors of one length"):
        Retriever(docs, ROOT_GROUP)("query")
    docs.create_node_group(name="chars", transform=lambda s: s)  # a str, not a list
    with pytest.raises(DataError, match="fruit.md: expected the transform of group 'chars'"):
        docs.nodes("chars")
