"""Retrieval and rerank sets, and how embedding models and rerankers are scored on them.

A **retrieval set** is what BEIR and sentence-transformers' InformationRetrievalEvaluator
take, in one of two layouts:

- one JSON file: `{"queries": {qid: text}, "corpus": {did: text or {"title", "text"}},
  "qrels": {qid: {did: grade} or [did, ...]}}` (a list means grade 1 each);
- a BEIR folder: `queries.jsonl` (`{"_id", "text"}`), `corpus.jsonl` (`{"_id", "title",
  "text"}`) and `qrels/test.tsv` (`query-id`, `corpus-id`, `score`, after a header line;
  without test.tsv, the folder's only .tsv).

A title is joined to its text with a space, as BEIR's sentence-transformers wrapper does.
Every query with qrels is embedded, and the whole corpus; ranking is by cosine similarity
(metrics.cosine_scores), and recall@k, MRR and nDCG@10 are metrics.retrieval_scores'.

A **rerank set** is what the data path reads for the rerank stage (data/formats.py):
FlagEmbedding's JSONL rows `{"query", "pos": [...], "neg": [...]}` or `{"query", "passage",
"label"}` rows; each query's candidates are scored together (EncoderEngine.rerank: a
cross-encoder, or cosine for an embedding model) and metrics.rerank_scores gives MRR and
nDCG@10. Candidates are listed least relevant first, so a tie counts against the model.
An embedding model scored on the held-out part of a split (a fine-tune's eval split) is
scored as retrieval instead: its held-out queries over every passage of the dataset (a
query's few candidates alone, often just its positive, would rank trivially).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.config.eval import EvalConfig
from tuneforge.config.run import RunConfig
from tuneforge.data.dataset_info import resolve_dataset
from tuneforge.data.load import load_data
from tuneforge.data.read import read_rows
from tuneforge.data.records import Example, RerankExample
from tuneforge.errors import ConfigError, DataError, Issue, UnsupportedError
from tuneforge.eval.metrics import cosine_scores, rerank_scores, retrieval_scores

if TYPE_CHECKING:
    from tuneforge.serve.encoders import EncoderEngine

RETRIEVAL_METRICS = ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")
RERANK_METRICS = ("mrr", "ndcg@10")
BEIR_FILES = ("queries.jsonl", "corpus.jsonl")


@dataclass(frozen=True)
class RetrievalSet:
    """Queries and documents by id, and each query's judged documents with their grades."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass(frozen=True)
class RerankQuery:
    """One query, its candidate passages, and their relevance grades (0: not relevant)."""

    query: str
    passages: tuple[str, ...]
    grades: tuple[int, ...]


@dataclass
class EncoderTask:
    """What an embedding model or reranker is scored on, and the metrics asked for."""

    kind: str  # "retrieval" or "rerank"
    metrics: tuple[str, ...]
    retrieval: RetrievalSet | None = None
    rerank: list[RerankQuery] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.retrieval.qrels) if self.retrieval is not None else len(self.rerank)

    def documents(self) -> int:
        """Documents in the corpus, or candidate passages over every rerank query."""
        if self.retrieval is not None:
            return len(self.retrieval.corpus)
        return sum(len(q.passages) for q in self.rerank)

    def measure(self, engine: EncoderEngine) -> dict[str, float]:
        """The asked metrics of one model (its embeddings, or its rerank scores)."""
        if self.retrieval is not None:
            data = self.retrieval
            qids, dids = list(data.qrels), list(data.corpus)
            queries, _ = engine.embed([data.queries[q] for q in qids])
            docs, _ = engine.embed([data.corpus[d] for d in dids])
            ks = sorted({int(m.split("@")[1]) for m in self.metrics if m.startswith("recall@")})
            found = retrieval_scores(cosine_scores(qids, queries, dids, docs), data.qrels, ks)
        else:
            scores = [engine.rerank(q.query, q.passages)[0] for q in self.rerank]
            found = rerank_scores(scores, [q.grades for q in self.rerank])
        return {m: found[m] for m in self.metrics}


def load_encoder_task(config: RunConfig, options: EvalConfig, model_kind: str) -> EncoderTask:
    """The retrieval or rerank set `config.data` names, checked whole, and the metrics that
    fit it and the model (an "embedding" or "rerank" model, as serve.encoders tells).

    A rerank set is read strictly (a bad row is an error, not dropped): it is split as
    training splits it when val_size / eval_dataset is set, and cut by max_samples.

    Raises:
        DataError, NotFoundError: no dataset, or a bad one (every problem listed).
        UnsupportedError: a reranker on a retrieval set.
        ConfigError: a metric that does not fit the set.
    """
    data = config.data
    if not data.dataset:
        raise DataError.one("no dataset given; expected a name or path", field="data.dataset")
    first = Path(data.dataset[0]).expanduser()
    if not first.is_dir():
        spec = resolve_dataset(data.dataset[0], Path(data.dataset_dir), data.file_type)
        first = spec.files[0] if len(spec.files) == 1 else first
    if is_retrieval_set(first):
        if len(data.dataset) > 1:
            raise ConfigError.one(f"expected one retrieval set, got {len(data.dataset)}",
                                  field="data.dataset", source="command line")
        if model_kind != "embedding":
            raise UnsupportedError(
                "a reranker on a retrieval set", "it would score every query with every "
                "document", hint="give a rerank set: JSONL rows {query, pos, neg}")
        task = EncoderTask("retrieval", RETRIEVAL_METRICS,
                           retrieval=read_retrieval_set(first, data.max_samples))
    else:
        bundle = load_data(data.model_copy(update={"strict": True}), stage="rerank",
                           seed=config.training.seed)
        is_split = data.eval_split_ratio > 0 or bool(data.eval_dataset)
        if is_split and model_kind == "embedding":  # a fine-tune's held-out queries
            task = EncoderTask("retrieval", RETRIEVAL_METRICS,
                               retrieval=pooled_retrieval_set(bundle.eval, bundle.train))
        else:
            task = EncoderTask("rerank", RERANK_METRICS,
                               rerank=rerank_queries(bundle.eval if is_split else bundle.train))
    bad = [m for m in options.metrics if m not in task.metrics]
    if bad:
        raise ConfigError.one(
            f"expected metrics among {', '.join(task.metrics)} for a {task.kind} set, got "
            f"{', '.join(bad)}", field="metrics", source="command line")
    task.metrics = tuple(options.metrics) or task.metrics
    return task


def is_retrieval_set(path: Path) -> bool:
    """A BEIR folder (queries.jsonl and corpus.jsonl), or a .json file holding one object
    with queries and corpus."""
    if path.is_dir():
        return all((path / name).is_file() for name in BEIR_FILES)
    if not path.is_file() or path.suffix.lower() != ".json":
        return False
    top = next(iter(read_rows(path, "json")), (None, None))[0]
    return isinstance(top, dict) and {"queries", "corpus"} <= set(top)


def read_retrieval_set(path: Path, max_queries: int | None = None) -> RetrievalSet:
    """The queries, corpus and qrels of a JSON file or BEIR folder; the first `max_queries`
    judged queries when given.

    Raises:
        DataError: every problem found (a missing field, an empty text, a qrel naming an
            unknown query or document, a grade that is not a whole number), with file, line
            (where the file has lines per record) and field.
    """
    issues: list[Issue] = []
    if path.is_dir():
        queries = _read_beir_texts(path / "queries.jsonl", issues)
        corpus = _read_beir_texts(path / "corpus.jsonl", issues)
        qrels_file = _beir_qrels_file(path)
        qrels, lines = _read_beir_qrels(qrels_file, issues)
        qrels_where = str(qrels_file)
    else:
        top, loc = next(iter(read_rows(path, "json")))
        if not isinstance(top, dict) or not {"queries", "corpus", "qrels"} <= set(top):
            keys = sorted(top) if isinstance(top, dict) else type(top).__name__
            raise DataError.one(f"expected an object with queries, corpus and qrels, got {keys}",
                                file=str(path), line=loc.line)
        queries = _json_texts(top["queries"], "queries", str(path), issues)
        corpus = _json_texts(top["corpus"], "corpus", str(path), issues)
        qrels, lines = _json_qrels(top["qrels"], str(path), issues), {}
        qrels_where = str(path)
    # an id whose text is bad is in queries/corpus (as None; its problem is listed already)
    for qid, judged in qrels.items():
        if qid not in queries:
            issues.append(Issue(f"expected a query id from the queries, got {qid!r}",
                                file=qrels_where, line=lines.get((qid, next(iter(judged)))),
                                field=f"qrels.{qid}"))
        issues += [Issue(f"expected a document id from the corpus, got {did!r}",
                         file=qrels_where, line=lines.get((qid, did)),
                         field=f"qrels.{qid}.{did}")
                   for did in judged if did not in corpus]
    if not issues and not any(g > 0 for judged in qrels.values() for g in judged.values()):
        issues.append(Issue("expected at least one relevant document (grade > 0), got none",
                            file=qrels_where, field="qrels"))
    if issues:
        raise DataError(issues)
    if max_queries is not None:
        qrels = dict(list(qrels.items())[:max_queries])
    return RetrievalSet({k: v for k, v in queries.items() if v is not None},
                        {k: v for k, v in corpus.items() if v is not None}, qrels)


def pooled_retrieval_set(held: Sequence[Example], rest: Sequence[Example]) -> RetrievalSet:
    """The held-out queries of a split searched over every passage of the dataset (both
    parts): a query's relevant passages are its positives (label > 0)."""
    ids: dict[str, str] = {}
    qids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for number, ex in enumerate([*held, *rest]):
        assert isinstance(ex, RerankExample)
        doc = ids.setdefault(ex.passage, f"d{len(ids)}")
        if number < len(held) and ex.label > 0:
            qid = qids.setdefault(ex.query, f"q{len(qids)}")
            qrels.setdefault(qid, {})[doc] = max(1, int(ex.label))
    return RetrievalSet({qid: query for query, qid in qids.items()},
                        {doc: text for text, doc in ids.items()}, qrels)


def rerank_queries(examples: Sequence[Example]) -> list[RerankQuery]:
    """The data path's rerank records grouped by query (first-seen order), least relevant
    candidates first.

    Raises:
        DataError: a label that is not a whole grade >= 0, or no query with a relevant one.
    """
    groups: dict[str, list[tuple[int, str]]] = {}
    issues: list[Issue] = []
    for ex in examples:
        assert isinstance(ex, RerankExample)
        if ex.label < 0 or not float(ex.label).is_integer():
            issues.append(Issue(f"expected a whole relevance grade (0: not relevant, 1, 2, "
                                f"...), got {ex.label:g}", file=ex.loc.file, line=ex.loc.line,
                                field=ex.loc.field("label")))
            continue
        groups.setdefault(ex.query, []).append((int(ex.label), ex.passage))
    if not issues and not any(g > 0 for group in groups.values() for g, _ in group):
        file = examples[0].loc.file if examples else None
        issues.append(Issue("expected at least one relevant passage (pos, or label > 0), got "
                            "none", file=file))
    if issues:
        raise DataError(issues)
    out = []
    for query, group in groups.items():
        group.sort(key=lambda item: item[0])  # stable: ties keep the file's order
        out.append(RerankQuery(query, tuple(p for _, p in group), tuple(g for g, _ in group)))
    return out


# -- reading ---------------------------------------------------------------------------------


def _json_texts(value: Any, name: str, file: str, issues: list[Issue]
                ) -> dict[str, str | None]:
    """Texts by id; None for an id whose text is bad (and listed in `issues`)."""
    if not isinstance(value, Mapping):
        issues.append(Issue(f"expected an object of id: text, got {type(value).__name__}",
                            file=file, field=name))
        return {}
    texts: dict[str, str | None] = {}
    for key, item in value.items():
        texts[str(key)] = text = _text_of(item)
        if text is None:
            issues.append(Issue('expected non-empty text (or {"title", "text"}), got '
                                f"{item!r:.60}", file=file, field=f"{name}.{key}"))
    return texts


def _json_qrels(value: Any, file: str, issues: list[Issue]) -> dict[str, dict[str, int]]:
    if not isinstance(value, Mapping):
        issues.append(Issue("expected an object of query id: {document id: grade}, got "
                            f"{type(value).__name__}", file=file, field="qrels"))
        return {}
    qrels: dict[str, dict[str, int]] = {}
    for qid, judged in value.items():
        if isinstance(judged, list):  # InformationRetrievalEvaluator's relevant_docs: a set
            judged = dict.fromkeys(judged, 1)
        if not isinstance(judged, Mapping) or not judged:
            issues.append(Issue("expected {document id: grade} or [document id, ...], got "
                                f"{judged!r:.60}", file=file, field=f"qrels.{qid}"))
            continue
        grades = {}
        for did, grade in judged.items():
            if isinstance(grade, bool) or not isinstance(grade, int):
                issues.append(Issue(f"expected a whole grade, got {grade!r:.40}", file=file,
                                    field=f"qrels.{qid}.{did}"))
            else:
                grades[str(did)] = grade
        qrels[str(qid)] = grades
    return qrels


def _read_beir_texts(path: Path, issues: list[Issue]) -> dict[str, str | None]:
    """Texts by `_id`; None for an id whose text is bad (and listed in `issues`)."""
    texts: dict[str, str | None] = {}
    for row, loc in read_rows(path, "jsonl"):
        did = row.get("_id") if isinstance(row, dict) else None
        if isinstance(did, bool) or not isinstance(did, str | int) or str(did) == "":
            issues.append(Issue(f"expected a string id, got {did!r:.40}", file=loc.file,
                                line=loc.line, field="_id"))
            continue
        texts[str(did)] = text = _text_of(row)
        if text is None:
            issues.append(Issue("expected non-empty text", file=loc.file, line=loc.line,
                                field="text"))
    return texts


def _beir_qrels_file(folder: Path) -> Path:
    qrels = folder / "qrels"
    if (qrels / "test.tsv").is_file():
        return qrels / "test.tsv"
    found = sorted(qrels.glob("*.tsv")) if qrels.is_dir() else []
    if len(found) != 1:
        raise DataError.one(f"expected qrels/test.tsv (or one .tsv in qrels/), got "
                            f"{[p.name for p in found] or 'none'}", file=str(folder))
    return found[0]


def _read_beir_qrels(path: Path, issues: list[Issue]
                     ) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str], int]]:
    """The qrels, and the line of each (query id, document id)."""
    qrels: dict[str, dict[str, int]] = {}
    lines: dict[tuple[str, str], int] = {}
    text = path.read_text(encoding="utf-8-sig")
    for number, cells in enumerate(csv.reader(io.StringIO(text), delimiter="\t"), start=1):
        if not cells or (number == 1 and cells[:1] == ["query-id"]):
            continue
        if len(cells) != 3:
            issues.append(Issue(f"expected 3 tab-separated columns (query-id, corpus-id, "
                                f"score), got {len(cells)}", file=str(path), line=number))
            continue
        qid, did, score = cells
        try:
            qrels.setdefault(qid, {})[did] = int(score)
        except ValueError:
            issues.append(Issue(f"expected a whole grade, got {score!r:.40}", file=str(path),
                                line=number, field="score"))
        lines[(qid, did)] = number
    return qrels, lines


def _text_of(item: Any) -> str | None:
    """A text, or a BEIR document's title and text joined by a space; None when empty."""
    if isinstance(item, Mapping):
        title, body = item.get("title") or "", item.get("text")
        if not isinstance(title, str) or not isinstance(body, str):
            return None
        item = f"{title} {body}" if title else body
    return item if isinstance(item, str) and item.strip() else None
