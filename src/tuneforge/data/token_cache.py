"""The on-disk cache of tokenised data: numpy arrays keyed by everything that decides them.

The key hashes the records (their text, roles, weights and locations), the tokenizer
(tokenizer.json, chat template, special tokens), the template record and the options. An
entry is a directory of .npy files plus meta.json, written under a temporary name and
renamed when complete, so a reader never sees half an entry; it is memory-mapped back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import marshal
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuneforge import __version__
from tuneforge.data.records import (
    ChatExample,
    Example,
    KTOExample,
    Message,
    PreferenceExample,
    TextExample,
)
from tuneforge.data.tokenized import Ragged, TokenizedData, TokenizeReport
from tuneforge.data.tokenizer import tokenizer_digest
from tuneforge.paths import atomic_dir, atomic_write, commit_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

FORMAT = 1
"""Bump when the stored layout or the meaning of a stored array changes."""


def cache_entry(
    cache_dir: Path, examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase,
    template: Mapping[str, str], options: Any,
) -> Path:
    """The directory that holds (or will hold) this tokenisation."""
    import tokenizers

    key = {
        "format": FORMAT, "tuneforge": __version__, "tokenizers": tokenizers.__version__,
        "records": records_digest(examples),
        "tokenizer": tokenizer_digest(tokenizer), "template": dict(template),
        "options": dataclasses.asdict(options),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
    return cache_dir / "tokenized" / digest[:32]


def records_digest(examples: Sequence[Example]) -> str:
    """A sha256 over every field of every record, in order."""
    h = hashlib.sha256()
    chunk = 4096
    for i in range(0, len(examples), chunk):
        # marshal version 2 writes values only (no back-references), so equal records give
        # equal bytes however their objects happen to be shared.
        h.update(marshal.dumps([_record_key(ex) for ex in examples[i : i + chunk]], 2))
    return h.hexdigest()


def load_tokenized(path: Path) -> TokenizedData | None:
    """The cached entry at `path`, memory-mapped, or None when there is none (or it is broken)."""
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            return None
        columns = {
            name: Ragged(_load(path / f"{name}.values.npy"), _load(path / f"{name}.offsets.npy"))
            for name in meta["columns"]
        }
        flags = {name: _load(path / f"{name}.flag.npy") for name in meta["flags"]}
    except (OSError, ValueError, KeyError) as e:
        logger.warning("cache entry %s is unreadable (%s); tokenising again", path, e)
        return None
    return TokenizedData(
        kind=meta["kind"], columns=columns, report=TokenizeReport.from_dict(meta["report"]),
        template=meta["template"], flags=flags,
    )


def save_tokenized(data: TokenizedData, path: Path) -> None:
    """Write `data` to `path` atomically (a temporary directory renamed when complete)."""
    tmp = atomic_dir(path)
    try:
        for name, column in data.columns.items():
            _save(tmp / f"{name}.values.npy", column.values)
            _save(tmp / f"{name}.offsets.npy", column.offsets)
        for name, flag in data.flags.items():
            _save(tmp / f"{name}.flag.npy", flag)
        meta = {
            "format": FORMAT, "kind": data.kind, "columns": list(data.columns),
            "flags": list(data.flags), "template": dict(data.template),
            "report": data.report.to_dict(),
        }
        atomic_write(tmp / "meta.json", json.dumps(meta, ensure_ascii=False))
        # the key names the content: a whole entry another process wrote stays
        commit_dir(tmp, path, keep=lambda entry: load_tokenized(entry) is not None)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("cached tokenised data in %s", path)


def _save(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as fh:
        np.save(fh, np.ascontiguousarray(array))
        fh.flush()
        os.fsync(fh.fileno())


def _load(path: Path) -> np.ndarray:
    array = np.load(path, mmap_mode="r")
    return np.asarray(array) if array.size == 0 else array


def _record_key(ex: Example) -> tuple[Any, ...]:
    loc = ex.loc
    head = (ex.kind, loc.file, loc.line, loc.index)
    if isinstance(ex, TextExample):
        return (*head, ex.text)
    if isinstance(ex, ChatExample):
        return (*head, ex.system, ex.tools, _messages(ex.messages))
    if isinstance(ex, PreferenceExample):
        return (*head, ex.system, ex.tools, _messages(ex.prompt), _messages((ex.chosen,)),
                _messages((ex.rejected,)))
    if isinstance(ex, KTOExample):
        return (*head, ex.system, ex.tools, ex.label, _messages(ex.messages))
    raise TypeError(f"not a tokenisable record: {type(ex).__name__}")


def _messages(messages: Iterable[Message]) -> tuple[Any, ...]:
    return tuple(
        (m.role, m.content, m.weight, m.name,
         tuple((c.name, c.arguments, c.id) for c in m.tool_calls) if m.tool_calls else ())
        for m in messages
    )
