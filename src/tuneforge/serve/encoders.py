"""Embedding, rerank and reward scoring: the models that score text instead of generating it.

`encoder_kind` tells from a directory's small files what a model serves; `EncoderEngine`
loads one such model and answers `embed`, `rerank` or `score`:

- embedding: sentence-transformers' `SentenceTransformer`, so pooling (mean, CLS, ...) is
  whatever the model's modules.json and 1_Pooling/config.json say; a plain encoder (BERT
  without a head or modules.json) gets mean pooling, sentence-transformers' default.
  Vectors are L2-normalised. Used as a reranker, it scores cosine similarity.
- rerank: sentence-transformers' `CrossEncoder` over (query, document) pairs; a score is
  `CrossEncoder.predict`'s, i.e. the model's logit through its activation (sigmoid for one
  label, unless the model's sentence-transformers config names another).
- reward: transformers' `AutoModelForSequenceClassification` with one label; the score is
  the head's value at the last non-pad token, as the model's own forward computes it. A LoRA
  adapter from our `rm` stage (score head in modules_to_save) is loaded on its base and
  merged.

Everything loads from local files (`resolve_model`); nothing reaches a hub. Texts longer than
the model's maximum are cut by sentence-transformers for embedding and rerank (as it always
does); for a reward model they are an error, since a cut answer would get another reward.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from tuneforge.data.tokenizer import load_tokenizer
from tuneforge.errors import DataError, Issue, NotFoundError, UnsupportedError
from tuneforge.models.sources import resolve_model
from tuneforge.settings import Settings

logger = logging.getLogger(__name__)

EncoderKind = Literal["embedding", "rerank", "reward"]
ADAPTER_CONFIG = "adapter_config.json"
_SERVES: dict[str, str] = {"embedding": "an embedding model; it serves embed and rerank",
                           "rerank": "a rerank model (cross-encoder); it serves rerank",
                           "reward": "a reward model; it serves score"}
_ST_KINDS: dict[str, EncoderKind] = {"SentenceTransformer": "embedding", "CrossEncoder": "rerank"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def encoder_kind(model_dir: Path) -> EncoderKind | None:
    """What a model directory serves as; None for a causal LM (served by Engine).

    - "embedding": a sentence-transformers dir (modules.json), or a plain encoder such as BERT
      without a classification head;
    - "rerank": a cross-encoder: an encoder *ForSequenceClassification (e.g.
      BertForSequenceClassification), or a sentence-transformers CrossEncoder dir;
    - "reward": a causal LM *ForSequenceClassification with num_labels 1, as our `rm` stage
      (TRL's RewardTrainer) saves it, or its LoRA adapter (a SEQ_CLS PEFT adapter).

    A run directory is judged by its output/. Reads only small JSON files (and transformers'
    table of encoder model types).
    """
    if (model_dir / "output").is_dir():
        model_dir = model_dir / "output"
    adapter = _read_json(model_dir / ADAPTER_CONFIG)
    if adapter is not None:
        return "reward" if adapter.get("task_type") == "SEQ_CLS" else None
    if (model_dir / "modules.json").is_file():
        st_config = _read_json(model_dir / "config_sentence_transformers.json") or {}
        # older sentence-transformers dirs carry no model_type: they are all SentenceTransformer
        return _ST_KINDS.get(str(st_config.get("model_type", "SentenceTransformer")))
    config = _read_json(model_dir / "config.json") or {}
    architectures = [str(a) for a in config.get("architectures") or []]
    is_encoder = _is_encoder(config.get("model_type"))
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        if is_encoder:
            return "rerank"
        return "reward" if _num_labels(config) == 1 else None
    if is_encoder and not any(a.endswith(("ForCausalLM", "ForConditionalGeneration"))
                              for a in architectures):
        return "embedding"
    return None


class EncoderEngine:
    """One embedding, rerank or reward model; thread-safe (a lock around the forward)."""

    def __init__(self, model: str, settings: Settings, *, kind: EncoderKind | None = None,
                 max_batch: int = 32) -> None:
        """Load `model`: an alias, a model directory, a hub id in the local cache, or (for a
        reward model) an `rm` run directory, run id or adapter directory.

        `kind` overrides what `encoder_kind` tells from the directory (it is not checked).

        Raises:
            NotFoundError: no such model, or an adapter without a base.
            UnsupportedError: a causal LM (serve it with Engine), a cross-encoder with more
                than one label, or an adapter on anything but a reward model.
        """
        self.name = model
        self.max_batch = max_batch
        self.model_dir, self.adapter_dir = _locate(model, settings)
        found = kind or encoder_kind(self.adapter_dir or self.model_dir)
        if found is None:
            raise UnsupportedError(
                f"model {model}", "a causal LM, or a model that is neither an embedding, a "
                "rerank (cross-encoder) nor a reward (one-label classifier) model",
                hint="serve a causal LM with tuneforge.serve.engine.Engine, or pass kind=")
        if found not in get_args(EncoderKind):
            raise UnsupportedError(f"kind {found!r}", "expected embedding, rerank or reward")
        if self.adapter_dir is not None and found != "reward":
            raise UnsupportedError(f"model {model}", f"a LoRA adapter on an encoder ({found}); "
                                   "only reward adapters are loaded (merge it first)")
        self.kind: EncoderKind = found
        self._lock = threading.Lock()
        self._device = _device()
        self._model: Any = None
        self._tokenizer: Any = None  # the reward model's; sentence-transformers keeps its own
        float32 = {"dtype": "float32"}  # as Engine: float32 weights, whatever the files hold
        if found == "embedding":
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self.model_dir), device=self._device,
                                              local_files_only=True, model_kwargs=float32)
        elif found == "rerank":
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(str(self.model_dir), device=self._device,
                                       local_files_only=True, model_kwargs=float32)
            if self._model.num_labels != 1:
                raise UnsupportedError(f"model {model}", f"a cross-encoder with "
                                       f"{self._model.num_labels} labels (a classifier); "
                                       "expected one relevance score")
        else:
            self._load_reward(settings)
        logger.info("loaded %s (%s) from %s", model, found, self.model_dir)

    # -- the three uses ----------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """L2-normalised vectors, one per text, and the prompt tokens they took.

        Raises:
            DataError: no texts, or an empty one (each is named: texts[2]).
            UnsupportedError: the model is not an embedding model.
        """
        self._require("embed", "embedding")
        texts = _checked(texts, "texts")
        with self._lock:
            vectors = self._model.encode(texts, batch_size=self.max_batch,
                                         normalize_embeddings=True, convert_to_numpy=True,
                                         show_progress_bar=False)
            tokens = self._token_count(texts)
        return vectors.astype(float).tolist(), tokens

    def rerank(self, query: str, documents: Sequence[str]) -> tuple[list[float], int]:
        """A relevance score per document, in input order, and the prompt tokens taken.

        A cross-encoder scores each (query, document) pair; an embedding model scores the
        cosine similarity of their embeddings.

        Raises:
            DataError: an empty query, no documents, or an empty document.
            UnsupportedError: a reward model.
        """
        self._require("rerank", "rerank", "embedding")
        query = _checked([query], "query")[0]
        documents = _checked(documents, "documents")
        if self.kind == "embedding":
            vectors, tokens = self.embed([query, *documents])
            first = vectors[0]
            return [sum(a * b for a, b in zip(first, v, strict=True)) for v in vectors[1:]], tokens
        pairs = [(query, d) for d in documents]
        with self._lock:
            scores = self._model.predict(pairs, batch_size=self.max_batch,
                                         convert_to_numpy=True, show_progress_bar=False)
            tokens = self._token_count(pairs)
        return [float(s) for s in scores], tokens

    def score(self, texts: Sequence[str], max_length: int | None = None
              ) -> tuple[list[float], int]:
        """A reward model's scalar per text, and the prompt tokens taken.

        Texts are tokenised as given (the tokenizer adds its special tokens); render a chat
        with the training template first to score a conversation as `rm` saw it. With
        `max_length` each text is cut to that many tokens (LLaMA-Factory's score call).

        Raises:
            DataError: no texts, an empty text, or one longer than the model takes.
            UnsupportedError: the model is not a reward model.
        """
        import torch

        self._require("score", "reward")
        texts = _checked(texts, "texts")
        encoded = [self._tokenizer(t)["input_ids"][:max_length] for t in texts]
        limit = getattr(self._model.config, "max_position_embeddings", None)
        too_long = [Issue(f"expected at most {limit} tokens, got {len(ids)}", field=f"texts[{i}]")
                    for i, ids in enumerate(encoded) if limit and len(ids) > limit]
        if too_long:
            raise DataError(too_long)
        scores: list[float] = []
        with self._lock, torch.no_grad():
            for start in range(0, len(texts), self.max_batch):
                # right padding: real tokens keep positions 0..n-1, as unbatched
                batch = self._tokenizer.pad({"input_ids": encoded[start:start + self.max_batch]},
                                            padding=True, padding_side="right",
                                            return_tensors="pt").to(self._device)
                logits = self._model(**batch).logits
                scores += [float(x) for x in logits[:, 0]]
        return scores, sum(len(ids) for ids in encoded)

    # -- loading and checks ------------------------------------------------------------------

    def _load_reward(self, settings: Settings) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            str(self.model_dir), num_labels=1, dtype=torch.float32, local_files_only=True)
        if self.adapter_dir is not None:
            from peft import PeftModel

            # the score head is in the adapter's modules_to_save: it replaces the new one
            model = PeftModel.from_pretrained(model, str(self.adapter_dir)).merge_and_unload()
        own = self.adapter_dir if self.adapter_dir is not None and any(
            (self.adapter_dir / f).is_file() for f in _TOKENIZER_FILES) else self.model_dir
        tokenizer = load_tokenizer(str(own), settings.cache)
        if model.config.pad_token_id is None:  # the head finds the last token by the pad id
            model.config.pad_token_id = (tokenizer.pad_token_id if tokenizer.pad_token_id
                                         is not None else tokenizer.eos_token_id)
        tokenizer.pad_token_id = model.config.pad_token_id  # pad with what the head skips
        self._model, self._tokenizer = model.to(self._device).eval(), tokenizer

    def _require(self, method: str, *kinds: str) -> None:
        if self.kind not in kinds:
            raise UnsupportedError(f"{method} with model {self.name}",
                                   f"it is {_SERVES[self.kind]}")

    def _token_count(self, inputs: list[Any]) -> int:
        """Tokens the model saw (after its cut), from sentence-transformers' own tokenisation."""
        features = self._model.preprocess(inputs)
        return int(features["attention_mask"].sum())


def _locate(model: str, settings: Settings) -> tuple[Path, Path | None]:
    """(model directory, adapter directory or None) of an alias, path, run dir or run id."""
    path = Path(model).expanduser()
    if not path.is_dir() and "/" not in model and (settings.runs / model / "output").is_dir():
        path = settings.runs / model
    if (path / "output").is_dir():
        path = path / "output"
    config = _read_json(path / ADAPTER_CONFIG)
    if config is None:
        return resolve_model(str(path) if path.is_dir() else model, settings), None
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise NotFoundError("model", model, hint=f"{path / ADAPTER_CONFIG} names no "
                            "base_model_name_or_path; expected the model it was trained on")
    return resolve_model(base, settings), path.resolve()


def _checked(texts: Sequence[str], name: str) -> list[str]:
    """`texts` as a list, or one DataError listing every missing or empty text."""
    if isinstance(texts, str):
        texts = [texts]
    items = list(texts)
    if not items:
        raise DataError.one("expected at least one text, got none", field=name)
    issues = []
    for i, text in enumerate(items):
        where = name if name == "query" else f"{name}[{i}]"
        if not isinstance(text, str):
            issues.append(Issue(f"expected a string, got {type(text).__name__}", field=where))
        elif not text.strip():
            issues.append(Issue(f"expected non-empty text, got {text!r}", field=where))
    if issues:
        raise DataError(issues)
    return items


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_encoder(model_type: object) -> bool:
    """Whether transformers knows `model_type` as a masked-LM encoder (BERT, RoBERTa, ...)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return isinstance(model_type, str) and model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _num_labels(config: dict[str, Any]) -> int:
    """config.json's label count: id2label's size (what transformers saves), else 2."""
    labels = config.get("id2label")
    if isinstance(labels, dict) and labels:
        return len(labels)
    value = config.get("num_labels")
    return value if isinstance(value, int) else 2
