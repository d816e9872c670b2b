"""Preprocessing benchmark: template, tokenise and mask N SFT samples; prints one JSON object.

The samples repeat LLaMA-Factory's alpaca_en_demo (999 rows) up to N, rendered with
SmolLM2's own chat template (and its default system prompt), cut at max_length 512. Reported:
samples/s and tokens/s of the fast path; the same on the unique rows alone (identical texts
and segments are tokenised once, so repetition helps; `unique` is the honest figure for data
without repeats); a cached second run; the straightforward path (per-sample jinja render,
prefix renders for the masks, one tokenizer call per sample) and whether every sample's ids
and labels are identical to it; peak RSS.

    .venv/bin/python bench/preprocess.py [-n 20000] [--data PATH] [--max-length 512]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.data.records import ChatExample, Location, Message
from tuneforge.data.tokenize import TokenizedData, TokenizeOptions, tokenize_examples
from tuneforge.data.tokenizer import load_tokenizer
from tuneforge.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "peer-data" / "llamafactory" / "alpaca_en_demo.json"


def alpaca_examples(path: Path) -> list[ChatExample]:
    """alpaca rows as LLaMA-Factory reads them: instruction + newline + input, then output."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [
        ChatExample(
            (Message("user", "\n".join(p for p in (row["instruction"], row.get("input")) if p)),
             Message("assistant", row["output"])),
            Location(str(path), 1, i),
            system=row.get("system") or None,
        )
        for i, row in enumerate(rows)
    ]


def identical(a: TokenizedData, b: TokenizedData) -> bool:
    """Same rows, same ids and labels, token for token."""
    return a.columns.keys() == b.columns.keys() and all(
        np.array_equal(a.columns[k].values, b.columns[k].values)
        and np.array_equal(a.columns[k].offsets, b.columns[k].offsets)
        for k in a.columns
    )


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--samples", type=int, default=20_000)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--tokenizer", default="smollm2-135m-instruct")
    parser.add_argument("--skip-straightforward", action="store_true")
    args = parser.parse_args()

    cache_dir = Settings().cache
    tokenizer, load_s = timed(lambda: load_tokenizer(args.tokenizer, cache_dir))
    unique = alpaca_examples(args.data)
    examples = [unique[i % len(unique)] for i in range(args.samples)]
    options = TokenizeOptions(max_length=args.max_length)
    rss_before = peak_rss_mb()

    def fresh() -> Any:
        """A newly loaded tokenizer, so no measurement inherits another's BPE cache."""
        return load_tokenizer(args.tokenizer, cache_dir)

    tokenizer = fresh()
    data, fast_s = timed(lambda: tokenize_examples(examples, tokenizer, options))
    rss_fast = peak_rss_mb()
    tokenizer = fresh()
    unique_data, unique_s = timed(lambda: tokenize_examples(unique, tokenizer, options))
    tokenizer = fresh()
    with tempfile.TemporaryDirectory() as cache:
        _, write_s = timed(lambda: tokenize_examples(examples, tokenizer, options, Path(cache)))
        cached, hit_s = timed(lambda: tokenize_examples(examples, tokenizer, options, Path(cache)))
        cached_identical = identical(cached, data)
        del cached
    result: dict[str, Any] = {
        "samples": len(examples),
        "unique_samples": len(unique),
        "max_length": args.max_length,
        "template": dict(data.template),
        "cores": len(os.sched_getaffinity(0)),
        "tokenizer_load_s": round(load_s, 3),
        "seconds": round(fast_s, 3),
        "samples_per_s": round(len(examples) / fast_s),
        "tokens": data.num_tokens,
        "tokens_per_s": round(data.num_tokens / fast_s),
        "unique": {
            "samples": len(unique),
            "seconds": round(unique_s, 3),
            "samples_per_s": round(len(unique) / unique_s),
            "tokens_per_s": round(unique_data.num_tokens / unique_s),
        },
        "first_run_with_cache_write_s": round(write_s, 3),
        "cached_second_run_s": round(hit_s, 3),
        "cached_identical": cached_identical,
        "report": {
            "kept": data.report.kept,
            "truncated": len(data.report.truncated),
            "dropped": len(data.report.dropped),
        },
        "peak_rss_mb_before_tokenising": rss_before,
        "peak_rss_mb_after_fast_path": rss_fast,
    }
    if not args.skip_straightforward:
        tokenizer = fresh()
        reference, reference_s = timed(
            lambda: tokenize_examples(examples, tokenizer, options, reference=True)
        )
        result["straightforward_s"] = round(reference_s, 3)
        result["straightforward_samples_per_s"] = round(len(examples) / reference_s)
        result["identical_to_straightforward"] = identical(data, reference)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
