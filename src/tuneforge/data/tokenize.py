"""Records -> input_ids and labels: the last step of the data path.

`tokenize_examples` is the one entry point. It renders every conversation with the template
(templates.py, chat_template.py), tokenises all texts in one batched call (segments.py),
marks the learned tokens (masking.py), cuts samples longer than max_length as LLaMA-Factory
does (truncation.py), drops samples left with nothing to learn (each named in the report),
packs sft samples when asked (packing.py) and caches the arrays (token_cache.py). pt data
is concatenated, each text followed by eos, into blocks of max_length.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tuneforge.data.conversation import Chat, Conversation, RenderedBatch
from tuneforge.data.masking import learned_labels
from tuneforge.data.packing import pack
from tuneforge.data.records import (
    ChatExample,
    Example,
    Kind,
    KTOExample,
    PreferenceExample,
    TextExample,
)
from tuneforge.data.segments import Encoded, encode_texts, encode_texts_plainly
from tuneforge.data.templates import Renderer, select_template
from tuneforge.data.token_cache import cache_entry, load_tokenized, save_tokenized
from tuneforge.data.tokenized import IGNORE_INDEX, Note, Ragged, TokenizedData, TokenizeReport
from tuneforge.data.truncation import apply_cuts, infer_seqlen, kept_tokens, turn_pairs
from tuneforge.errors import ConfigError, DataError, InternalError, UnsupportedError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tuneforge.config.run import RunConfig

__all__ = [
    "IGNORE_INDEX", "Note", "Ragged", "TokenizeOptions", "TokenizeReport", "TokenizedData",
    "infer_seqlen", "render_preview", "tokenize_examples",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenizeOptions:
    """How records become token ids; `from_config` reads them from a RunConfig."""

    max_length: int = 2048
    template: str | None = None
    default_system: str | None = None
    mask_history: bool = False
    train_on_prompt: bool = False
    packing: bool = False

    def __post_init__(self) -> None:
        if self.mask_history and self.train_on_prompt:
            raise ConfigError.one(
                "data.mask_history cannot be combined with data.train_on_prompt; "
                "set at most one of them", field="data.mask_history",
            )
        if self.max_length < 1:
            raise ConfigError.one(
                f"expected an integer >= 1, got {self.max_length}", field="data.max_length"
            )

    @classmethod
    def from_config(cls, config: RunConfig) -> TokenizeOptions:
        """The options a run asks for (data.max_length is LLaMA-Factory's cutoff_len)."""
        return cls(
            max_length=config.data.max_length, template=config.model.template,
            default_system=config.model.default_system, mask_history=config.data.mask_history,
            train_on_prompt=config.data.train_on_prompt, packing=config.data.packing,
        )


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    options: TokenizeOptions,
    cache_dir: Path | None = None,
    *,
    overwrite_cache: bool = False,
    reference: bool = False,
) -> TokenizedData:
    """Tokenise records of one kind (pt, sft, pairwise or kto), reusing a cached result.

    Args:
        cache_dir: where results are cached (Settings.cache); None caches nothing.
        overwrite_cache: compute again even when a cached result exists.
        reference: render each sample with per-sample jinja and tokenise each text with a
            plain tokenizer call. Slow; the definition the fast path must equal (tests,
            bench). Never cached.

    Raises:
        DataError: there are no records.
        UnsupportedError: embedding/rerank records, or packing asked for pairwise/kto.
    """
    kind = _kind_of(examples)
    if options.packing and kind in ("pairwise", "kto"):
        raise UnsupportedError("packing", f"{kind} data cannot be packed; only sft and pt")
    renderer = None if kind == "pt" else select_template(tokenizer, options.template)
    template = renderer.describe() if renderer is not None else {"template": "none"}
    entry = None
    if cache_dir is not None and not reference:
        entry = cache_entry(cache_dir, examples, tokenizer, template, options)
        cached = None if overwrite_cache else load_tokenized(entry)
        if cached is not None:
            logger.info("tokenised data from cache %s", entry)
            return cached
    if renderer is None:
        data = _tokenize_text(examples, tokenizer, options, reference)
    elif kind == "pairwise":
        data = _tokenize_pairwise(examples, tokenizer, renderer, options, reference)
    else:
        data = _tokenize_chat(examples, tokenizer, renderer, options, reference, kind)
    if entry is not None:
        save_tokenized(data, entry)
    return data


def render_preview(
    example: Example, tokenizer: PreTrainedTokenizerBase, options: TokenizeOptions
) -> list[tuple[str, bool]]:
    """One record as training sees it: text pieces, each flagged learned or not.

    Raises:
        DataError: the record would be dropped; the message says why.
    """
    if isinstance(example, TextExample):
        ids = encode_texts([example.text], tokenizer).ids.tolist()
        ids = (ids + [_eos_id(tokenizer)])[: options.max_length]
        return [(tokenizer.decode(ids, skip_special_tokens=False), True)]
    data = tokenize_examples([example], tokenizer, dataclasses.replace(options, packing=False))
    if len(data) == 0:
        note = data.report.dropped[0]
        raise DataError.one(
            f"dropped: {note.reason}: {note.detail}", file=note.loc.file, line=note.loc.line
        )
    prefix = "chosen_" if data.kind == "pairwise" else ""
    pairs = zip(data.columns[prefix + "input_ids"][0].tolist(),
                data.columns[prefix + "labels"][0].tolist(), strict=True)
    pieces = []
    for learned, run in itertools.groupby(pairs, key=lambda p: p[1] != IGNORE_INDEX):
        pieces.append((tokenizer.decode([t for t, _ in run], skip_special_tokens=False), learned))
    return pieces


def _kind_of(examples: Sequence[Example]) -> Kind:
    if not examples:
        raise DataError.one("expected at least one record to tokenise, got none")
    kinds = {ex.kind for ex in examples}
    if len(kinds) > 1:
        raise InternalError(f"one dataset holds several record kinds: {sorted(kinds)}")
    kind = kinds.pop()
    if kind in ("embedding", "rerank"):
        raise UnsupportedError(
            "tokenize", f"{kind} records are tokenised by the sentence-transformers recipe"
        )
    return kind


def _chat(ex: ChatExample | KTOExample, options: TokenizeOptions) -> Chat:
    """The record itself, or a copy with the default system prompt when it has none."""
    if ex.system or not options.default_system:
        return ex
    return Conversation(ex.messages, system=options.default_system, tools=ex.tools)


def _render(renderer: Renderer, chats: Sequence[Chat], reference: bool) -> RenderedBatch:
    if reference:
        return RenderedBatch.of([renderer.render_reference(c) for c in chats])
    return renderer.render_all(chats)


def _encode(texts: list[str], tokenizer: PreTrainedTokenizerBase, reference: bool) -> Encoded:
    return encode_texts_plainly(texts, tokenizer) if reference else encode_texts(texts, tokenizer)


def _tokenize_chat(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, renderer: Renderer,
    options: TokenizeOptions, reference: bool, kind: Kind,
) -> TokenizedData:
    """sft and kto: one conversation per record."""
    chats = [ex for ex in examples if isinstance(ex, ChatExample | KTOExample)]
    last_only = kind == "kto"
    rendered = _render(renderer, [_chat(ex, options) for ex in chats], reference)
    encoded = _encode(rendered.texts, tokenizer, reference)
    labels, learned = learned_labels(
        encoded, rendered, train_on_prompt=options.train_on_prompt,
        mask_history=options.mask_history, last_only=last_only,
    )
    max_length = options.max_length
    # Most rows fit and learn something and are kept as they are; the others are cut or
    # dropped one by one, each with a note naming its record.
    cuts: dict[int, np.ndarray | None] = {}
    dropped: list[Note] = []
    truncated: list[Note] = []
    lengths = encoded.lengths()
    for i in np.flatnonzero((learned == 0) | (lengths > max_length)).tolist():
        ex, a, b = chats[i], int(encoded.offsets[i]), int(encoded.offsets[i + 1])
        cuts[i] = None
        if learned[i] == 0:
            dropped.append(_nothing_learned(ex))
            continue
        pairs = turn_pairs(encoded.starts[a:b], rendered[i].spans, b - a, last_only)
        keep = kept_tokens(pairs, max_length, options.mask_history)
        if not (labels[a:b][keep] != IGNORE_INDEX).any():
            dropped.append(_truncated_away(ex, b - a, max_length))
            continue
        truncated.append(_truncated(ex, b - a, len(keep), max_length))
        cuts[i] = keep
    (input_ids, label_rows), is_kept = apply_cuts(encoded.offsets, [encoded.ids, labels], cuts)
    columns = {"input_ids": input_ids, "labels": label_rows}
    if options.packing:
        columns = pack(columns["input_ids"], columns["labels"], max_length)
    flags = {}
    if kind == "kto":
        tags = [ex.label if isinstance(ex, KTOExample) else False for ex in chats]
        flags["kto_tag"] = np.array(tags, dtype=bool)[is_kept]
    report = TokenizeReport(
        total=len(chats), kept=int(is_kept.sum()), rows=len(columns["input_ids"]),
        tokens=len(columns["input_ids"].values), dropped=tuple(dropped),
        truncated=tuple(truncated),
    )
    return TokenizedData(kind, columns, report, renderer.describe(), flags)


def _tokenize_pairwise(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, renderer: Renderer,
    options: TokenizeOptions, reference: bool,
) -> TokenizedData:
    """pairwise: prompt + chosen and prompt + rejected, cut together as LLaMA-Factory does."""
    pairs = [ex for ex in examples if isinstance(ex, PreferenceExample)]
    n = len(pairs)
    system = [ex.system or options.default_system for ex in pairs]
    conversations = [
        Conversation((*ex.prompt, ex.chosen), system=s, tools=ex.tools)
        for ex, s in zip(pairs, system, strict=True)
    ] + [
        Conversation((*ex.prompt, ex.rejected), system=s, tools=ex.tools)
        for ex, s in zip(pairs, system, strict=True)
    ]
    rendered = _render(renderer, conversations, reference)
    encoded = _encode(rendered.texts, tokenizer, reference)
    labels, _ = learned_labels(
        encoded, rendered, train_on_prompt=options.train_on_prompt, mask_history=False,
        last_only=True,
    )
    max_length = options.max_length
    rows: dict[str, list[np.ndarray]] = {
        k: [] for k in ("chosen_input_ids", "chosen_labels", "rejected_input_ids",
                        "rejected_labels")
    }
    dropped: list[Note] = []
    truncated: list[Note] = []
    for i, ex in enumerate(pairs):
        sides = []
        for j in (i, n + i):
            a, b = int(encoded.offsets[j]), int(encoded.offsets[j + 1])
            spans = rendered[j].spans
            start = int(np.searchsorted(encoded.starts[a:b], spans[-1].start)) if spans else b - a
            sides.append((encoded.ids[a:b], labels[a:b], start))
        if any(not (lab != IGNORE_INDEX).any() for _, lab, _ in sides):
            dropped.append(_nothing_learned(ex))
            continue
        longest = max(len(ids) for ids, _, _ in sides)
        if longest > max_length:
            response = max(len(ids) - start for ids, _, start in sides)
            cut = []
            for ids, lab, start in sides:
                source_len, target_len = infer_seqlen(start, response, max_length)
                keep = np.r_[0:source_len, start:min(len(ids), start + target_len)]
                cut.append((ids[keep], lab[keep], start))
            sides = cut
            if any(not (lab != IGNORE_INDEX).any() for _, lab, _ in sides):
                dropped.append(_truncated_away(ex, longest, max_length))
                continue
            after = max(len(ids) for ids, _, _ in sides)
            truncated.append(_truncated(ex, longest, after, max_length))
        for side, (ids, lab, _) in zip(("chosen", "rejected"), sides, strict=True):
            rows[f"{side}_input_ids"].append(ids)
            rows[f"{side}_labels"].append(lab)
    columns = {name: Ragged.from_rows(r) for name, r in rows.items()}
    kept = len(columns["chosen_input_ids"])
    report = TokenizeReport(
        total=n, kept=kept, rows=kept,
        tokens=len(columns["chosen_input_ids"].values) + len(columns["rejected_input_ids"].values),
        dropped=tuple(dropped), truncated=tuple(truncated),
    )
    return TokenizedData("pairwise", columns, report, renderer.describe())


def _tokenize_text(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, options: TokenizeOptions,
    reference: bool,
) -> TokenizedData:
    """pt: every text then eos, concatenated and cut into blocks of max_length (rest dropped;
    as LLaMA-Factory does, text shorter than one block is kept as one short block)."""
    texts = [ex.text for ex in examples if isinstance(ex, TextExample)]
    encoded = _encode(texts, tokenizer, reference)
    with_eos = encoded.lengths() + 1
    total = int(with_eos.sum())
    flat = np.empty(total, dtype=np.int32)
    ends = np.cumsum(with_eos) - 1
    is_text = np.ones(total, dtype=bool)
    is_text[ends] = False
    flat[is_text] = encoded.ids
    flat[ends] = _eos_id(tokenizer)
    max_length = options.max_length
    used = total // max_length * max_length if total >= max_length else total
    offsets = np.arange(0, used + 1, max_length, dtype=np.int64) if used >= max_length \
        else np.array([0, used] if used else [0], dtype=np.int64)
    blocks = Ragged(flat[:used], offsets)
    report = TokenizeReport(
        total=len(texts), kept=len(texts), rows=len(blocks), tokens=used,
        remainder_tokens=total - used,
    )
    return TokenizedData("pt", {"input_ids": blocks, "labels": blocks}, report,
                         {"template": "none"})


def _nothing_learned(ex: Example) -> Note:
    return Note(ex.loc, "no_learned_tokens",
                "no token is learned under the masking policy (message weights, mask_history)")


def _truncated_away(ex: Example, length: int, max_length: int) -> Note:
    return Note(ex.loc, "truncated_away",
                f"{length} tokens; every learned token lies past max_length={max_length}")


def _truncated(ex: Example, length: int, kept: int, max_length: int) -> Note:
    return Note(ex.loc, "truncated", f"{length} tokens cut to {kept} (max_length={max_length})")


def _eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    eos = tokenizer.eos_token_id
    if not isinstance(eos, int):
        raise UnsupportedError("pt", "the tokenizer has no eos token to end each text with")
    return eos


