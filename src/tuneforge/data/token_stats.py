"""Token-level facts for `tuneforge data validate/preview`: lengths, truncation, rendering."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from tuneforge.config.run import RunConfig
from tuneforge.data.records import Example, TextExample
from tuneforge.data.segments import encode_texts
from tuneforge.data.tokenize import TokenizeOptions, render_preview, tokenize_examples
from tuneforge.data.tokenizer import load_tokenizer
from tuneforge.errors import DataError
from tuneforge.settings import Settings

UNLIMITED = 2**31 - 1


def _lengths(examples: Sequence[Example], tokenizer: Any, options: TokenizeOptions,
             settings: Settings) -> np.ndarray:
    if isinstance(examples[0], TextExample):  # pt: each text plus its eos, before chunking
        encoded = encode_texts([e.text for e in examples], tokenizer)  # type: ignore[union-attr]
        return np.diff(encoded.offsets) + 1
    whole = dataclasses.replace(options, max_length=UNLIMITED, packing=False)
    data = tokenize_examples(examples, tokenizer, whole, settings.cache)
    return next(iter(data.columns.values())).lengths()


def token_stats(examples: Sequence[Example], config: RunConfig, settings: Settings
                ) -> dict[str, Any]:
    """The token-length distribution and what `cutoff_len` would truncate or drop."""
    assert config.model.tokenizer is not None
    tokenizer = load_tokenizer(config.model.tokenizer, settings.cache)
    options = dataclasses.replace(TokenizeOptions.from_config(config), packing=False)
    lengths = _lengths(examples, tokenizer, options, settings)
    cut = tokenize_examples(examples, tokenizer, options, settings.cache)
    percentile = {p: int(np.percentile(lengths, p)) for p in (50, 90, 99)}
    return {
        "tokenizer": config.model.tokenizer,
        "template": cut.template.get("template", "none"),
        "cutoff_len": options.max_length,
        "lengths": {"min": int(lengths.min()), "p50": percentile[50], "p90": percentile[90],
                    "p99": percentile[99], "max": int(lengths.max()),
                    "mean": float(lengths.mean())},
        "truncated": int((lengths > options.max_length).sum()),
        "dropped": len(cut.report.dropped),
        "dropped_samples": [str(note) for note in cut.report.dropped],
    }


def preview_pieces(examples: Sequence[Example], config: RunConfig, settings: Settings
                   ) -> tuple[str, list[list[tuple[str, bool]]]]:
    """A header naming tokenizer and template, and each sample as (text, learned) pieces."""
    if not config.model.tokenizer:
        raise DataError.one("preview needs a tokenizer; expected --tokenizer", field="tokenizer")
    tokenizer = load_tokenizer(config.model.tokenizer, settings.cache)
    options = TokenizeOptions.from_config(config)
    samples = [render_preview(example, tokenizer, options) for example in examples]
    template = config.model.template or "the tokenizer's own chat template"
    return f"tokenizer {config.model.tokenizer}, template: {template}", samples
