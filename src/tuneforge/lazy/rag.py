"""LazyLLM's Document / Retriever / Reranker: retrieval over a folder of text, on numpy.

What users of LazyLLM write, and what it does here:

    docs = Document(kb_path, embed=embed, manager=False)   # every .txt/.md file: one root node
    docs.create_node_group(name="split_sent", transform=lambda s: s.split("\\n"))
    retriever = Retriever(doc=docs, group_name="split_sent", similarity="cosine", topk=1)
    retriever.update()           # trains `embed` if it still needs it, then indexes the group
    nodes = retriever("query")   # best first, each a copy with `similarity_score` set

There is no vector database: an index is the group's nodes plus either a matrix of
unit-length embeddings (cosine = dot product) or a BM25 table (`_bm25.py`), kept on the
Document per (group, similarity) so retrievers over the same group share it.

Models are duck-typed, so this module never imports `tuneforge.lazy.module`:
- an embedding model is an object with `embed_texts(list[str])` or `encode(list[str])`, or
  else a callable taking one text and returning one vector;
- a reranker is an object with `rerank(query, texts)` or a callable `(query, texts)`, both
  returning one score per text;
- a model is *trainable and untrained* when it has a callable `update()` and a true
  `needs_update` attribute; `Retriever.update()` calls that `update()` once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.errors import ConfigError, DataError, NotFoundError, UnsupportedError
from tuneforge.lazy._bm25 import BM25Index

logger = logging.getLogger(__name__)

ROOT_GROUP = "lazyllm_root"
"""LazyLLM's name for the built-in group: one node per file, its whole text."""
SIMILARITIES = ("cosine", "bm25")
TEXT_SUFFIXES = (".txt", ".md")
# How many texts go to the embedding model at once while indexing.
EMBED_BATCH_SIZE = 64
# A reranker sees this many first-stage candidates at least (or topk * 4 when larger).
MIN_RERANK_CANDIDATES = 20


@dataclass(eq=False, repr=False)
class DocNode:
    """One piece of a document: a whole file (the root group) or a piece a transform made.

    `metadata` holds `file_name` (the file's name), `path` (its absolute path) and `index`
    (the node's position among its parent's kept pieces; 0 for a root node).
    `similarity_score` is set only on the copies a Retriever or Reranker returns.
    """

    text: str
    group: str
    metadata: dict[str, Any] = field(default_factory=dict)
    parent: DocNode | None = None
    similarity_score: float | None = None

    def get_text(self) -> str:
        """The node's text."""
        return self.text

    def get_content(self) -> str:
        """The node's text (LazyLLM's other name for `get_text`)."""
        return self.text

    def with_score(self, score: float) -> DocNode:
        """A copy carrying `score`; the node itself (shared by an index) is left alone."""
        return dataclasses.replace(self, metadata=dict(self.metadata),
                                   similarity_score=float(score))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return (f"DocNode(group={self.group!r}, file={self.metadata.get('file_name')!r}, "
                f"index={self.metadata.get('index')!r}, score={self.similarity_score!r}, "
                f"text={text!r})")


@dataclass(frozen=True)
class _NodeGroup:
    name: str
    transform: Callable[[str], Sequence[str]] | None
    parent: str | None


@dataclass
class _Index:
    """The nodes of one group and what scores a query against them."""

    nodes: list[DocNode]
    embed: Any = None  # the model the vectors came from (cosine only)
    vectors: np.ndarray | None = None
    bm25: BM25Index | None = None

    def scores(self, query: str) -> np.ndarray:
        """One score per node: cosine similarity, or BM25 when the index has no vectors."""
        if self.bm25 is not None:
            return self.bm25.scores(query)
        assert self.vectors is not None
        vector = embed_texts(self.embed, [query])[0]
        if vector.shape[0] != self.vectors.shape[1]:
            raise ConfigError.one(f"expected a query vector of length {self.vectors.shape[1]} "
                                  f"(as the indexed ones), got {vector.shape[0]}", field="embed")
        return self.vectors @ vector


class Document:
    """A folder of .txt and .md files (read recursively, in sorted order) as node groups.

    Args:
        dataset_path: The folder. Hidden files and folders (a name starting with ".") are
            skipped; files must be UTF-8; empty files are skipped with a warning.
        embed: The embedding model for cosine retrieval, or None for BM25 only.
        manager: LazyLLM's document-manager UI; tuneforge has none, so only False.
        embed_batch_size: How many texts go to `embed` at once while indexing.

    Raises:
        NotFoundError: The folder does not exist.
        DataError: It is not a folder, or holds no .txt or .md file.
        ConfigError: `embed` is neither a callable nor has `embed_texts`/`encode`.
        UnsupportedError: `manager=True`, or a LazyLLM keyword tuneforge does not implement.
    """

    def __init__(self, dataset_path: str | Path, embed: Any = None, manager: bool = False, *,
                 embed_batch_size: int = EMBED_BATCH_SIZE, **kwargs: Any) -> None:
        _reject_unsupported("Document", kwargs, "dataset_path, embed, manager, embed_batch_size")
        if manager:
            raise UnsupportedError("Document(manager=True)", "tuneforge has no document "
                                   "manager UI", hint="pass manager=False")
        if embed is not None and not _is_embed_model(embed):
            raise ConfigError.one(f"expected a callable or an object with embed_texts() or "
                                  f"encode(), got {type(embed).__name__}", field="embed")
        _check_positive_int(embed_batch_size, "embed_batch_size")
        self.dataset_path = Path(dataset_path)
        self.files = _find_text_files(self.dataset_path)
        self.embed = embed
        self.embed_batch_size = embed_batch_size
        self._groups: dict[str, _NodeGroup] = {ROOT_GROUP: _NodeGroup(ROOT_GROUP, None, None)}
        self._nodes: dict[str, list[DocNode]] = {}
        self._indexes: dict[tuple[str, str], _Index] = {}

    @property
    def groups(self) -> tuple[str, ...]:
        """The node groups' names, the built-in root group first."""
        return tuple(self._groups)

    def create_node_group(self, name: str, transform: Callable[[str], Sequence[str]],
                          parent: str = ROOT_GROUP) -> None:
        """Add a group whose nodes are `transform(text)` of each node of `parent`.

        Empty and whitespace-only pieces are dropped. The pieces are made the first time
        the group is read (`nodes`, or a Retriever's first query or update).

        Raises:
            ConfigError: `name` exists already, `parent` does not, or `transform` is not
                callable.
        """
        if not isinstance(name, str) or not name or name in self._groups:
            raise ConfigError.one(f"expected a new group name, got {name!r} (existing groups: "
                                  f"{', '.join(self._groups)})", field="name")
        if not callable(transform):
            raise ConfigError.one(f"expected a callable str -> list[str], got "
                                  f"{type(transform).__name__}", field="transform")
        _check_group(parent, self._groups, "parent")
        self._groups[name] = _NodeGroup(name, transform, parent)

    def nodes(self, group: str = ROOT_GROUP) -> list[DocNode]:
        """The nodes of `group`, in file order, then in the order the transform gave them."""
        _check_group(group, self._groups, "group_name")
        if group not in self._nodes:
            spec = self._groups[group]
            if spec.transform is None or spec.parent is None:
                self._nodes[group] = _read_root_nodes(self.files)
            else:
                parents = self.nodes(spec.parent)
                self._nodes[group] = _split_nodes(parents, spec.name, spec.transform)
        return self._nodes[group]

    def _index(self, group: str, similarity: str, *, rebuild: bool = False) -> _Index:
        """The shared index of (group, similarity), built when absent, stale or asked for."""
        key = (group, similarity)
        index = self._indexes.get(key)
        is_stale = index is not None and similarity == "cosine" and index.embed is not self.embed
        if index is None or rebuild or is_stale:
            nodes = self.nodes(group)
            if similarity == "bm25":
                index = _Index(nodes, bm25=BM25Index([n.text for n in nodes]))
            else:
                if _needs_update(self.embed):
                    logger.warning("indexing group %r with an embedding model that is not "
                                   "trained yet; call retriever.update() to train it first",
                                   group)
                vectors = embed_texts(self.embed, [n.text for n in nodes],
                                      self.embed_batch_size)
                index = _Index(nodes, embed=self.embed, vectors=vectors)
            logger.info("indexed %d nodes of group %r for %s", len(nodes), group, similarity)
            self._indexes[key] = index
        return index


class Reranker:
    """A reranking model with LazyLLM's `topk`: scores texts against a query, best first.

    Args:
        model: An object with `rerank(query, texts)`, or a callable `(query, texts)`,
            returning one score per text (higher is better). If it is trainable, a
            Retriever's `update()` trains it.
        topk: How many nodes `__call__` keeps; a Retriever returns at most this many too.
    """

    def __init__(self, model: Any, topk: int = 1, **kwargs: Any) -> None:
        _reject_unsupported("Reranker", kwargs, "model, topk")
        if not _is_reranker(model):
            raise ConfigError.one(f"expected a callable (query, texts) or an object with "
                                  f"rerank(), got {type(model).__name__}", field="model")
        _check_positive_int(topk, "topk")
        self.model = model
        self.topk = topk

    def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        """The model's score of each text against `query`."""
        return rerank_scores(self.model, query, texts)

    def __call__(self, nodes: Sequence[DocNode], query: str) -> list[DocNode]:
        """The `topk` best of `nodes` for `query`, as copies carrying the reranker's score."""
        scores = self.rerank(query, [n.text for n in nodes])
        order = sorted(range(len(nodes)), key=lambda i: -scores[i])
        return [nodes[i].with_score(scores[i]) for i in order[: self.topk]]


class Retriever:
    """The `topk` nodes of one group of a Document that best match a query.

    Args:
        doc: The Document.
        group_name: One of `doc.groups`.
        similarity: "cosine" (the Document's `embed`; unit vectors, dot product) or "bm25"
            (lexical; Chinese by characters and character bigrams, other text by words).
            BM25 returns only nodes sharing at least one term with the query.
        similarity_cut_off: Nodes scoring below it are dropped (first-stage score).
        topk: How many nodes to return at most.
        reranker: None, a `Reranker`, an object with `rerank(query, texts)` or a callable
            `(query, texts)` returning scores. With one, the best max(topk * 4, 20)
            first-stage nodes are reranked and the result carries the reranker's scores.

    Raises:
        ConfigError: An unknown similarity or group, cosine without an embedding model, a
            topk below 1, or a reranker of the wrong kind.
    """

    def __init__(self, doc: Document, group_name: str, similarity: str = "cosine",
                 similarity_cut_off: float = float("-inf"), topk: int = 6,
                 reranker: Any = None, **kwargs: Any) -> None:
        _reject_unsupported("Retriever", kwargs, "doc, group_name, similarity, "
                            "similarity_cut_off, topk, reranker")
        if not isinstance(doc, Document):
            raise ConfigError.one(f"expected a Document, got {type(doc).__name__}", field="doc")
        if similarity not in SIMILARITIES:
            raise ConfigError.one(f"expected one of {', '.join(SIMILARITIES)}, got "
                                  f"{similarity!r}", field="similarity")
        _check_group(group_name, doc._groups, "group_name")
        if similarity == "cosine" and doc.embed is None:
            raise ConfigError.one("similarity='cosine' needs Document(embed=...), got embed=None; "
                                  "pass an embedding model or use similarity='bm25'",
                                  field="similarity")
        _check_positive_int(topk, "topk")
        if isinstance(similarity_cut_off, bool) or not isinstance(similarity_cut_off,
                                                                  int | float):
            raise ConfigError.one(f"expected a number, got {similarity_cut_off!r}",
                                  field="similarity_cut_off")
        if reranker is not None and not _is_reranker(reranker):
            raise ConfigError.one(f"expected a Reranker, a callable (query, texts) or an object "
                                  f"with rerank(), got {type(reranker).__name__}",
                                  field="reranker")
        self.doc = doc
        self.group_name = group_name
        self.similarity = similarity
        self.similarity_cut_off = float(similarity_cut_off)
        self.topk = topk
        self.reranker = reranker

    def update(self) -> None:
        """Train each model this retriever uses that still needs it, then rebuild the index."""
        for model in self._models():
            if _needs_update(model):
                logger.info("training %s before indexing group %r", type(model).__name__,
                            self.group_name)
                model.update()
        self.doc._index(self.group_name, self.similarity, rebuild=True)

    def forward(self, query: str) -> list[DocNode]:
        """The best nodes for `query`, best first, as copies carrying their score."""
        if not isinstance(query, str):
            raise ConfigError.one(f"expected a str, got {type(query).__name__}", field="query")
        index = self.doc._index(self.group_name, self.similarity)
        scores = index.scores(query) if index.nodes else np.zeros(0)
        order = np.argsort(-scores, kind="stable")
        kept = [int(i) for i in order if scores[i] >= self.similarity_cut_off
                and (self.similarity != "bm25" or scores[i] > 0)]
        if self.reranker is None:
            return [index.nodes[i].with_score(scores[i]) for i in kept[: self.topk]]
        candidates = kept[: max(self.topk * 4, MIN_RERANK_CANDIDATES)]
        reranked = rerank_scores(self.reranker, query, [index.nodes[i].text for i in candidates])
        best = sorted(range(len(candidates)), key=lambda j: -reranked[j])
        limit = min(self.topk, getattr(self.reranker, "topk", self.topk))
        return [index.nodes[candidates[j]].with_score(reranked[j]) for j in best[:limit]]

    __call__ = forward

    def _models(self) -> list[Any]:
        """The models the results depend on, each once: embed (cosine), reranker, its model."""
        found: list[Any] = []
        embed = self.doc.embed if self.similarity == "cosine" else None
        for model in (embed, self.reranker, getattr(self.reranker, "model", None)):
            if model is not None and all(model is not seen for seen in found):
                found.append(model)
        return found


def embed_texts(embed: Any, texts: Sequence[str],
                batch_size: int = EMBED_BATCH_SIZE) -> np.ndarray:
    """Unit-length embeddings of `texts`, one row each, asked of `embed` in batches.

    Raises:
        ConfigError: The model did not answer one vector of one length per text.
    """
    batches: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        if callable(getattr(embed, "embed_texts", None)):
            answer = embed.embed_texts(batch)
        elif callable(getattr(embed, "encode", None)):
            answer = embed.encode(batch)
        else:
            answer = [embed(text) for text in batch]
        batches.append(_as_matrix(answer, len(batch)))
    if not batches:
        return np.zeros((0, 0))
    if len({b.shape[1] for b in batches}) > 1:
        raise ConfigError.one(f"expected vectors of one length, got lengths "
                              f"{sorted({b.shape[1] for b in batches})}", field="embed")
    matrix = np.concatenate(batches)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)  # a zero vector stays zero: score 0


def rerank_scores(reranker: Any, query: str, texts: Sequence[str]) -> list[float]:
    """A reranker's score of each text: its `rerank(query, texts)` or its call.

    Raises:
        ConfigError: It did not answer one finite number per text.
    """
    if not texts:
        return []
    if callable(getattr(reranker, "rerank", None)):
        answer = reranker.rerank(query, list(texts))
    else:
        answer = reranker(query, list(texts))
    try:
        scores = [float(s) for s in answer]
    except (TypeError, ValueError):
        scores = []
    if len(scores) != len(texts) or not all(math.isfinite(s) for s in scores):
        raise ConfigError.one(f"expected {len(texts)} finite scores, got {answer!r:.80}",
                              field="reranker")
    return scores


def _as_matrix(answer: Any, count: int) -> np.ndarray:
    # LazyLLM's deployed embedding modules answer with the vector as JSON text.
    if isinstance(answer, list | tuple):
        answer = [json.loads(v) if isinstance(v, str) else v for v in answer]
    try:
        matrix = np.asarray(answer, dtype=np.float64)
    except (TypeError, ValueError):
        matrix = np.zeros(0)
    if matrix.ndim != 2 or matrix.shape[0] != count or not np.isfinite(matrix).all():
        raise ConfigError.one(f"expected {count} finite vectors of one length, got "
                              f"{answer!r:.80}", field="embed")
    return matrix


def _find_text_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise NotFoundError("knowledge base folder", str(folder),
                            hint="Document(dataset_path) expects a folder of .txt and .md files")
    if not folder.is_dir():
        raise DataError.one("expected a folder of .txt and .md files, got a file",
                            file=str(folder))
    files = [p for p in folder.rglob("*") if p.is_file()
             and p.suffix.lower() in TEXT_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if not files:
        raise DataError.one("expected at least one .txt or .md file in the folder or its "
                            "subfolders, found none", file=str(folder))
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _read_root_nodes(files: Sequence[Path]) -> list[DocNode]:
    nodes = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DataError.one(f"expected UTF-8 text, got an invalid byte at offset "
                                f"{err.start}", file=str(path)) from err
        if not text.strip():
            logger.warning("%s: skipped: the file is empty", path)
            continue
        meta = {"file_name": path.name, "path": str(path.resolve()), "index": 0}
        nodes.append(DocNode(text=text, group=ROOT_GROUP, metadata=meta))
    return nodes


def _split_nodes(parents: Sequence[DocNode], group: str,
                 transform: Callable[[str], Sequence[str]]) -> list[DocNode]:
    nodes = []
    for parent in parents:
        pieces = transform(parent.text)
        if isinstance(pieces, str) or not all(isinstance(p, str) for p in pieces):
            raise DataError.one(f"expected the transform of group {group!r} to return a list "
                                f"of str, got {pieces!r:.80}", file=parent.metadata["path"])
        kept = [p for p in pieces if p.strip()]
        for i, piece in enumerate(kept):
            meta = {"file_name": parent.metadata["file_name"],
                    "path": parent.metadata["path"], "index": i}
            nodes.append(DocNode(text=piece, group=group, metadata=meta, parent=parent))
    return nodes


def _check_group(name: str, groups: dict[str, _NodeGroup], field_name: str) -> None:
    if name not in groups:
        raise ConfigError.one(f"expected one of {', '.join(groups)}, got {name!r}",
                              field=field_name)


def _check_positive_int(value: Any, field_name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError.one(f"expected an integer >= 1, got {value!r}", field=field_name)


def _reject_unsupported(owner: str, kwargs: dict[str, Any], supported: str) -> None:
    if kwargs:
        raise UnsupportedError(f"{owner}({', '.join(sorted(kwargs))}=...)",
                               f"not implemented by tuneforge; {owner} takes {supported}")


def _is_embed_model(embed: Any) -> bool:
    return (callable(getattr(embed, "embed_texts", None))
            or callable(getattr(embed, "encode", None)) or callable(embed))


def _is_reranker(reranker: Any) -> bool:
    return callable(getattr(reranker, "rerank", None)) or callable(reranker)


def _needs_update(model: Any) -> bool:
    """The trainable protocol: a callable `update()` and a true `needs_update`."""
    return callable(getattr(model, "update", None)) and bool(getattr(model, "needs_update",
                                                                     False))
