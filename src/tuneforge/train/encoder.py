"""The encoder recipes: embedding models and rerankers, trained with sentence-transformers.

Reads top to bottom like sft.py: check the machine, load the stage's records (FlagEmbedding's
{query, pos, neg} rows, or {query, passage, label}), optionally mine hard negatives with the
base model, build each query's group of passages, then train with sentence-transformers'
trainer (a transformers Trainer, so checkpoints, resume, our callback and the stop request
work as for the LLM stages) and save output/ in sentence-transformers' format, which
`tuneforge serve` answers on /v1/embeddings and /v1/rerank.

- embedding: a SentenceTransformer with in-batch negatives plus each query's hard negatives
  (MultipleNegativesRankingLoss, or its cached variant for big batches); rows are (anchor,
  positive, negative_1..n) with n = train_group_size - 1, as FlagEmbedding groups them.
- rerank: a CrossEncoder with one output from a base encoder (all-MiniLM-L6-v2 works),
  listwise (ListNet over each query's group) or pointwise (binary cross-entropy per pair).

A group short of negatives is filled with the record's own, then mined ones, then passages
of other queries (FlagEmbedding would fail on such a record; random negatives are what its
in-batch negatives are anyway). Token counts are not measured for these stages.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config.run import RunConfig
from tuneforge.data.read import read_rows
from tuneforge.data.records import EmbeddingExample, Example, RerankExample
from tuneforge.errors import DataError
from tuneforge.paths import RunPaths
from tuneforge.settings import Settings
from tuneforge.train.arguments import training_arguments
from tuneforge.train.callback import Progress
from tuneforge.train.distributed import main_process_first
from tuneforge.train.hardware import training_device
from tuneforge.train.stage import TrainResult, load_stage_data, run_callbacks, train_and_save
from tuneforge.train.stopping import StopRequest

logger = logging.getLogger(__name__)


@dataclass
class QueryGroup:
    """One query with its judged passages: positives first, then negatives (grade 0)."""

    query: str
    positives: list[tuple[str, float]] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    prompt: str | None = None


@dataclass(frozen=True)
class EncoderInputs:
    """What an encoder recipe starts from: the device, the model folder and the groups."""

    device: str
    model_dir: Path
    train: list[QueryGroup]
    eval: list[QueryGroup] | None


def query_groups(examples: Sequence[Example]) -> list[QueryGroup]:
    """Records as query groups: an embedding record is one group; rerank pairs are gathered
    by query text, in the order queries first appear (a label > 0 makes a positive)."""
    groups: dict[str, QueryGroup] = {}
    out: list[QueryGroup] = []
    for example in examples:
        if isinstance(example, EmbeddingExample):
            out.append(QueryGroup(example.query, [(p, 1.0) for p in example.pos],
                                  list(example.neg), example.prompt))
        elif isinstance(example, RerankExample):
            group = groups.get(example.query)
            if group is None:
                group = groups[example.query] = QueryGroup(example.query)
                out.append(group)
            if example.label > 0:
                group.positives.append((example.passage, example.label))
            else:
                group.negatives.append(example.passage)
    return [g for g in out if g.positives]


def prepare_encoder_stage(config: RunConfig, paths: RunPaths, settings: Settings
                          ) -> EncoderInputs:
    """Check the machine, load the records (report under `paths`), find the model.

    Raises:
        DataError: no query with a positive passage is left.
    """
    from transformers.utils import logging as hf_logging

    device = training_device()  # `train` has checked what the machine can do
    hf_logging.disable_progress_bar()
    # sentence-transformers shows progress bars (encode, model card) when its logger is at
    # INFO, as ours is: progress is the callback's
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    with main_process_first():
        bundle, model_dir = load_stage_data(config, paths, settings)
    train = query_groups(bundle.train)
    if not train:
        raise DataError.one("no query with a positive passage to train on; expected rows "
                            "{query, pos: [...], neg: [...]} or {query, passage, label > 0}",
                            file=", ".join(config.data.dataset))
    held = query_groups(bundle.eval) if bundle.eval else []
    logger.info("data: %d training queries, %d eval queries", len(train), len(held))
    return EncoderInputs(device, model_dir, train, held or None)


def _quietly() -> contextlib.AbstractContextManager[Any]:
    """sentence-transformers draws tqdm bars that no setting turns off (mining's encode, the
    model card's "widget examples"): send them nowhere; progress is the callback's. Log
    handlers keep the stream they were given, so no log line is lost."""
    return contextlib.redirect_stderr(io.StringIO())


def run_embedding(config: RunConfig, paths: RunPaths, settings: Settings, stop: StopRequest,
                  progress: Progress | None = None) -> TrainResult:
    """Fine-tune an embedding model on query/passage groups as `config` says."""
    import torch
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    inputs = prepare_encoder_stage(config, paths, settings)
    method = config.method
    torch.manual_seed(config.training.seed)
    model = SentenceTransformer(str(inputs.model_dir), device=inputs.device,
                                local_files_only=True, model_kwargs={"dtype": torch.float32},
                                trust_remote_code=config.model.trust_remote_code)
    model.max_seq_length = min(model.max_seq_length or config.data.max_length,
                               config.data.max_length)
    if method.query_instruction:  # encode_query(...) puts it before queries from now on
        model.prompts = {**model.prompts, "query": method.query_instruction}
    mined = mine_negatives(model, inputs.train, config) if method.mine_hard_negatives else {}
    train = embedding_rows(inputs.train, mined, config)
    held = embedding_rows(inputs.eval, {}, config) if inputs.eval else None
    scale = 1.0 / method.temperature
    loss = losses.CachedMultipleNegativesRankingLoss(
        model, scale=scale, mini_batch_size=method.mini_batch_size) \
        if method.embedding_loss == "cached_mnrl" \
        else losses.MultipleNegativesRankingLoss(model, scale=scale)
    args = training_arguments(config, paths.checkpoints, has_eval=held is not None,
                              device=inputs.device, cls=Arguments,
                              # a text twice in a batch would be its own false negative
                              batch_sampler=BatchSamplers.NO_DUPLICATES)
    callback, callbacks = run_callbacks(config, paths, stop, progress, has_eval=held is not None)
    with _quietly():
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                             eval_dataset=held, loss=loss, callbacks=callbacks)
    return train_and_save(trainer, callback, config, paths, has_eval=held is not None)


def run_reranker(config: RunConfig, paths: RunPaths, settings: Settings, stop: StopRequest,
                 progress: Progress | None = None) -> TrainResult:
    """Fine-tune a cross-encoder reranker (one relevance score) as `config` says."""
    import torch
    from sentence_transformers import CrossEncoder, CrossEncoderTrainer
    from sentence_transformers import CrossEncoderTrainingArguments as Arguments
    from sentence_transformers.cross_encoder import losses

    inputs = prepare_encoder_stage(config, paths, settings)
    method = config.method
    mined: dict[str, list[str]] = {}
    if method.mine_hard_negatives:
        from sentence_transformers import SentenceTransformer

        miner = SentenceTransformer(str(inputs.model_dir), device=inputs.device,
                                    local_files_only=True,
                                    trust_remote_code=config.model.trust_remote_code)
        mined = mine_negatives(miner, inputs.train, config)
        del miner
    torch.manual_seed(config.training.seed)
    model = CrossEncoder(str(inputs.model_dir), num_labels=1, device=inputs.device,
                         max_length=config.data.max_length, local_files_only=True,
                         model_kwargs={"dtype": torch.float32},
                         trust_remote_code=config.model.trust_remote_code)
    listwise = method.rerank_loss == "listwise"
    rows = listwise_rows if listwise else pointwise_rows
    train = rows(inputs.train, mined, config)
    held = rows(inputs.eval, {}, config) if inputs.eval else None
    loss = losses.ListNetLoss(model) if listwise else losses.BinaryCrossEntropyLoss(model)
    args = training_arguments(config, paths.checkpoints, has_eval=held is not None,
                              device=inputs.device, cls=Arguments)
    callback, callbacks = run_callbacks(config, paths, stop, progress, has_eval=held is not None)
    with _quietly():
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train,
                                      eval_dataset=held, loss=loss, callbacks=callbacks)
    return train_and_save(trainer, callback, config, paths, has_eval=held is not None)


# -- hard negatives ---------------------------------------------------------------------------


def mine_negatives(model: Any, groups: Sequence[QueryGroup], config: RunConfig
                   ) -> dict[str, list[str]]:
    """Hard negatives per query, found by `model` (the base) in the mining corpus with
    sentence-transformers' `mine_hard_negatives`: the most similar passages that are not a
    positive of the query and score below 95% of its positive (likely false negatives are
    skipped, as NV-Retriever recommends)."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    pairs = Dataset.from_dict({
        "query": [g.query for g in groups for _ in g.positives],
        "passage": [p for g in groups for p, _ in g.positives]})
    corpus = read_corpus(config.method.mining_corpus) if config.method.mining_corpus else \
        sorted({p for g in groups for p, _ in g.positives} | {n for g in groups
                                                              for n in g.negatives})
    with _quietly():
        found = mine_hard_negatives(
            pairs, model, anchor_column_name="query", positive_column_name="passage",
            corpus=corpus, num_negatives=config.method.mine_hard_negatives,
            relative_margin=0.05, sampling_strategy="top", output_format="labeled-list",
            batch_size=64, verbose=False)
    mined: dict[str, list[str]] = {}
    for query, passages, labels in zip(found["query"], found["passage"], found["labels"],
                                       strict=True):
        known = mined.setdefault(query, [])
        known += [p for p, label in zip(passages, labels, strict=True)
                  if not label and p not in known]
    logger.info("mined %d hard negatives for %d queries", sum(map(len, mined.values())),
                len(mined))
    return mined


def read_corpus(path: str) -> list[str]:
    """A mining corpus: a .txt file (one passage per line) or JSON/JSONL rows with `text`.

    Raises:
        DataError: a row without a `text` string, or no passage at all.
    """
    file = Path(path).expanduser()
    texts = []
    for row, loc in read_rows(file):  # a .txt line arrives as {"text": line}
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise DataError.one("expected a `text` string", file=str(file), line=loc.line,
                                field="text")
        texts.append(text.strip())
    texts = sorted({t for t in texts if t})
    if not texts:
        raise DataError.one("no passage in the mining corpus", file=str(file),
                            field="method.mining_corpus")
    return texts


# -- rows ------------------------------------------------------------------------------------


def _negatives(group: QueryGroup, mined: dict[str, list[str]], need: int,
               pool: Sequence[str], rng: random.Random) -> list[str]:
    """`need` negatives: the group's own, then mined, then random passages of other queries."""
    own = {p for p, _ in group.positives}
    chosen: list[str] = []
    for source in (group.negatives, mined.get(group.query, [])):
        fresh = [n for n in source if n not in own and n not in chosen]
        chosen += rng.sample(fresh, min(len(fresh), need - len(chosen)))
    if len(chosen) >= need:
        return chosen
    # random passages of other queries, drawn with rejection: filtering the whole pool for
    # every group would cost queries x passages; a few draws suffice unless the pool is
    # nearly all this group's own passages, and then filtering it is cheap
    taken = own | set(chosen)
    for _ in range(4 * need if pool else 0):
        passage = pool[rng.randrange(len(pool))]
        if passage not in taken:
            chosen.append(passage)
            taken.add(passage)
            if len(chosen) >= need:
                return chosen
    others = [p for p in pool if p not in taken]
    chosen += rng.sample(others, min(len(others), need - len(chosen)))
    return chosen


def _pool(groups: Sequence[QueryGroup]) -> list[str]:
    return sorted({p for g in groups for p, _ in g.positives})


def embedding_rows(groups: Sequence[QueryGroup], mined: dict[str, list[str]],
                   config: RunConfig) -> Any:
    """(anchor, positive, negative_1..n) rows, one per positive; n = train_group_size - 1,
    or fewer when the data has too few passages for every query to get n."""
    from datasets import Dataset

    rng = random.Random(config.training.seed)
    pool = _pool(groups)
    need = config.method.train_group_size - 1
    rows = []
    for group in groups:
        prompt = group.prompt or config.method.query_instruction or ""
        for positive, _ in group.positives:
            rows.append([prompt + group.query, positive,
                         *_negatives(group, mined, need, pool, rng)])
    width = min(len(r) for r in rows)  # the loss takes a fixed number of columns
    names = ["anchor", "positive", *(f"negative_{i}" for i in range(1, width - 1))]
    return Dataset.from_dict({name: [r[i] for r in rows] for i, name in enumerate(names)})


def listwise_rows(groups: Sequence[QueryGroup], mined: dict[str, list[str]],
                  config: RunConfig) -> Any:
    """(query, docs, labels) rows: each positive with train_group_size - 1 negatives."""
    from datasets import Dataset

    rng = random.Random(config.training.seed)
    pool = _pool(groups)
    need = config.method.train_group_size - 1
    queries, docs, labels = [], [], []
    for group in groups:
        for positive, grade in group.positives:
            negatives = _negatives(group, mined, need, pool, rng)
            queries.append(group.query)
            docs.append([positive, *negatives])
            labels.append([grade, *[0.0] * len(negatives)])
    return Dataset.from_dict({"query": queries, "docs": docs, "labels": labels})


def pointwise_rows(groups: Sequence[QueryGroup], mined: dict[str, list[str]],
                   config: RunConfig) -> Any:
    """(query, passage, label) rows: each positive, and train_group_size - 1 negatives for it
    (labels above 1 are scaled into [0, 1] for the binary cross-entropy)."""
    from datasets import Dataset

    rng = random.Random(config.training.seed)
    pool = _pool(groups)
    need = config.method.train_group_size - 1
    top = max((grade for g in groups for _, grade in g.positives), default=1.0)
    rows: list[tuple[str, str, float]] = []
    for group in groups:
        for positive, grade in group.positives:
            rows.append((group.query, positive, grade / max(top, 1.0)))
            rows += [(group.query, n, 0.0) for n in _negatives(group, mined, need, pool, rng)]
    return Dataset.from_dict({"query": [r[0] for r in rows], "passage": [r[1] for r in rows],
                              "label": [r[2] for r in rows]})
