"""Loading a tokenizer from a local directory, a GGUF file or a packaged alias; never the network.

Aliases are the model presets of resources/presets/models.yaml (`config/presets.py`): a GGUF
preset's tokenizer is converted from its GGUF, a folder preset's is read from its folder.

A GGUF tokenizer is converted once and saved as a plain tokenizer directory under
`cache_dir/tokenizers/<alias or sha1 of the file>`; later loads read that in well under 1 s.
`AutoTokenizer.from_pretrained(dir, gguf_file=...)` takes about 16 s for SmolLM2, most of it
parsing the model config (with the `gguf` library) only to choose the tokenizer class. For
a packaged alias the class is known (`PreTrainedTokenizerFast`, what AutoTokenizer picks for
it; a slow test checks the two give the same files), which brings the conversion to ~3 s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.config.presets import model_presets, preset_files
from tuneforge.data.segments import backend_of
from tuneforge.errors import DataError, NotFoundError
from tuneforge.paths import atomic_dir, commit_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def load_tokenizer(spec: str, cache_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer named by `spec`: a directory, a .gguf file, an alias, or a cached hub id.

    Raises:
        NotFoundError: the path does not exist, the alias is unknown or its package is not
            installed, or a hub id is not in the local Hugging Face cache.
    """
    preset = model_presets().get(spec)
    if preset is not None and preset.needs_preparation:
        return _from_gguf(packaged_gguf(spec), cache_dir / "tokenizers" / spec, known_class=True)
    if preset is not None:
        return _from_directory(preset_files(spec), spec)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise NotFoundError(
                "tokenizer", spec, hint="expected a directory, a .gguf file or an alias"
            )
        return _from_gguf(path, cache_dir / "tokenizers" / file_key(path))
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1 and not any((path / f).exists() for f in _TOKENIZER_FILES):
            return _from_gguf(ggufs[0], cache_dir / "tokenizers" / file_key(ggufs[0]))
        return _from_directory(path, spec)
    if HUB_ID.fullmatch(spec) and not spec.startswith("."):
        return _from_hub_cache(spec)
    raise NotFoundError(
        "tokenizer",
        spec,
        hint="no such file or directory, and not an alias (known: "
        + ", ".join(sorted(model_presets()))
        + ")",
    )


def packaged_gguf(alias: str) -> Path:
    """The GGUF file that an alias names, inside its installed Python package."""
    path = preset_files(alias)
    if not path.is_file() or path.suffix != ".gguf":
        raise NotFoundError("model", alias, hint=f"the alias names {path}, not a GGUF file")
    return path


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """A sha256 of everything that decides token ids: vocabulary, rules, template, specials."""
    h = hashlib.sha256(backend_of(tokenizer).to_str().encode("utf-8"))
    extra = {
        "class": type(tokenizer).__name__,
        "chat_template": tokenizer.chat_template,
        "bos": tokenizer.bos_token,
        "eos": tokenizer.eos_token,
    }
    h.update(json.dumps(extra, sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()


def _from_gguf(gguf: Path, target: Path, *, known_class: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not target.is_dir():
        logger.info("converting the tokenizer of %s once into %s", gguf, target)
        loader = PreTrainedTokenizerFast if known_class else AutoTokenizer
        # Beside tokenizer files (a tuneforge export has them) transformers reads neither
        # fully: the tokenizer loses its special tokens and chat template. So the GGUF is
        # read from a folder of its own.
        with tempfile.TemporaryDirectory() as alone:
            (Path(alone) / gguf.name).symlink_to(gguf.resolve())
            try:
                tokenizer = loader.from_pretrained(alone, gguf_file=gguf.name)
            except (OSError, ValueError) as e:  # transformers' words for "not a GGUF tokenizer"
                raise DataError.one(
                    f"expected a GGUF file with a tokenizer: {e}", file=str(gguf)
                ) from None
        tmp = atomic_dir(target)
        tokenizer.save_pretrained(str(tmp))
        commit_dir(tmp, target, keep=Path.is_dir)  # another process converted it meanwhile
    return AutoTokenizer.from_pretrained(str(target), local_files_only=True)


def _from_directory(path: Path, spec: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise NotFoundError(
            "tokenizer", spec, hint=f"the directory holds no loadable tokenizer ({e})"
        ) from e


def _from_hub_cache(hub_id: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(hub_id, local_files_only=True)
    except (OSError, ValueError) as e:
        raise NotFoundError(
            "tokenizer",
            hub_id,
            hint="not a local path and not in the local Hugging Face cache; tuneforge has no "
            "network at run time, so download it beforehand or give a local directory",
        ) from e


def file_key(path: Path) -> str:
    """A sha1 naming a file by its resolved path, size and modification time."""
    resolved = path.resolve()
    stat = resolved.stat()
    return hashlib.sha1(f"{resolved}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
