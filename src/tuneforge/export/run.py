"""`export_model`: a fine-tuned model out of tuneforge, for transformers, Ollama and llama.cpp.

Reads top to bottom: find the sources (small files only), load the tokenizer and the chat
template training used and derive its per-turn pieces (so an unexportable template fails
before any model loads), merge and save the safetensors model with its tokenizer, convert
to GGUF when asked, write the Modelfile and the export record, then move the directory into
place: it appears whole or not at all.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge import __version__
from tuneforge.config.export import ExportConfig
from tuneforge.data.templates import NamedTemplate, Renderer, select_template
from tuneforge.data.tokenizer import load_tokenizer
from tuneforge.errors import InternalError, StateError
from tuneforge.export.chat_format import derive_format, set_jinja
from tuneforge.export.gguf import GGUF_FILE, check_convertible, write_gguf
from tuneforge.export.merge import locate_sources, merge_model
from tuneforge.export.modelfile import MODELFILE, modelfile_text
from tuneforge.models.gguf import CHECK_NEW_TOKENS, CHECK_PROMPTS, GreedyCheck, greedy_token_ids
from tuneforge.paths import atomic_dir, atomic_write, commit_dir
from tuneforge.settings import Settings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

RECORD_FILE = "tuneforge_export.json"


class ExportRecord(BaseModel):
    """tuneforge_export.json: written last into an export, so it marks one complete."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="The base (or whole fine-tuned) model directory.")
    adapter: str | None = Field(description="The adapter merged into it, if any.")
    template: str = Field(description="The chat template of the Modelfile and tokenizer.")
    format: Literal["safetensors", "gguf"] = Field(description="What was written.")
    outtype: str | None = Field(description="The GGUF tensor type, with format gguf.")
    merge_check: GreedyCheck = Field(description="Saved model vs base + adapter, greedily.")
    gguf_check: GreedyCheck | None = Field(description="GGUF vs saved model, greedily.")
    tuneforge_version: str = Field(description="The tuneforge that exported it.")


@dataclass(frozen=True)
class ExportResult:
    """Where an export put its files."""

    output_dir: Path
    modelfile: Path
    gguf: Path | None
    record: ExportRecord


def export_model(config: ExportConfig, settings: Settings) -> ExportResult:
    """Merge, save, convert and describe a model for Ollama as `config` says.

    Raises:
        NotFoundError, ConfigError: the arguments name nothing usable (see locate_sources).
        UnsupportedError: the chat template or (with gguf) the model cannot be exported.
        StateError: output_dir holds something other than a previous export.
        InternalError: a written model does not generate what its source does (a bug).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no tqdm in the core; the CLI says where things went
    target = Path(config.output_dir).expanduser()
    _check_target(target)
    sources = locate_sources(config, settings)
    tokenizer = load_tokenizer(str(sources.tokenizer), settings.cache)
    renderer = _training_renderer(tokenizer, config.template or sources.template)
    fmt = derive_format(renderer, tokenizer, default_system=sources.default_system)
    if isinstance(renderer, NamedTemplate):  # the exported tokenizer renders as training did
        set_jinja(tokenizer, fmt, renderer)
    template_name = renderer.describe()["template"]
    is_gguf = config.format == "gguf"
    if is_gguf:
        check_convertible(sources.model, tokenizer)
    modelfile = modelfile_text(fmt, f"./{GGUF_FILE}" if is_gguf else ".",
                               template_name=template_name)

    staging = atomic_dir(target)
    try:
        merge_check, merged_ids = merge_model(sources, tokenizer, staging)
        gguf_check = None
        if is_gguf:
            write_gguf(staging, tokenizer, staging / GGUF_FILE, outtype=config.outtype,
                       name=target.name, add_bos=bool(fmt.prefix))
            gguf_check = _check_gguf(staging, tokenizer, merged_ids, strict=config.outtype == "f32")
        atomic_write(staging / MODELFILE, modelfile)
        record = ExportRecord(
            model=str(sources.model), adapter=str(sources.adapter) if sources.adapter else None,
            template=template_name, format=config.format,
            outtype=config.outtype if is_gguf else None, merge_check=merge_check,
            gguf_check=gguf_check, tuneforge_version=__version__,
        )
        atomic_write(staging / RECORD_FILE, record.model_dump_json(indent=2) + "\n")
        _make_readable(staging)  # temp dirs and files are private; Ollama runs as another user
        commit_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("exported %s", target)
    return ExportResult(target, target / MODELFILE, target / GGUF_FILE if is_gguf else None,
                        record)


def _check_target(target: Path) -> None:
    """An export replaces only an earlier export, never a model or run it might read."""
    if target.is_file() or (target.is_dir() and any(target.iterdir())
                            and not (target / RECORD_FILE).is_file()):
        raise StateError(
            f"{target}: expected a new or empty directory, or an earlier export (with "
            f"{RECORD_FILE}), got something else", hint="choose another --output_dir")


def _make_readable(directory: Path) -> None:
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o755 if path.is_dir() else 0o644)


def _training_renderer(tokenizer: PreTrainedTokenizerBase, template: str | None) -> Renderer:
    """The template training used: a named one, or the tokenizer's own ("tokenizer" and, for
    pt runs, "none" mean the tokenizer's, else `empty`)."""
    name = None if template in (None, "tokenizer", "none") else template
    return select_template(tokenizer, name)


def _check_gguf(
    directory: Path, tokenizer: PreTrainedTokenizerBase, expected: list[list[int]], *, strict: bool
) -> GreedyCheck:
    """Load the GGUF with transformers and compare its greedy tokens with the saved model's."""
    import torch
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(
        str(directory), gguf_file=GGUF_FILE, dtype=torch.float32)
    got = greedy_token_ids(loaded, tokenizer)
    check = GreedyCheck(prompts=len(CHECK_PROMPTS), new_tokens=CHECK_NEW_TOKENS,
                        identical=got == expected)
    if not check.identical:
        if strict:
            raise InternalError(f"{directory / GGUF_FILE}: the f32 GGUF does not generate what "
                                f"the merged model does: expected {expected}, got {got}")
        logger.warning("the f16 GGUF generates differently from the f32 model on some prompts")
    return check
