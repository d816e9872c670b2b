"""What to export (base model, adapter, tokenizer, training template) and the merge itself.

`locate_sources` reads only small files, so every mistake in the arguments is reported
before a model loads. `merge_model` loads base + adapter in float32, merges with PEFT's
`merge_and_unload`, saves, loads the saved directory back and checks that it generates,
greedily, the same tokens as base + adapter did; a difference is a bug (InternalError).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.config.export import ExportConfig
from tuneforge.errors import ConfigError, InternalError, NotFoundError
from tuneforge.models.gguf import CHECK_NEW_TOKENS, CHECK_PROMPTS, GreedyCheck, greedy_token_ids
from tuneforge.models.sources import resolve_model
from tuneforge.settings import Settings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
TEMPLATE_FILE = "tuneforge_template.json"  # written by train/sft.py next to the output
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass(frozen=True)
class Sources:
    """The files an export reads: a whole model, optionally an adapter on it, a tokenizer."""

    model: Path
    adapter: Path | None
    tokenizer: Path
    template: str | None  # the training template: a name, "tokenizer", "none"; None: unknown
    default_system: str | None  # training's model.default_system, when a run says so


def locate_sources(config: ExportConfig, settings: Settings) -> Sources:
    """Resolve --model and --adapter into directories, reading only small files.

    Raises:
        NotFoundError: the adapter, run or base model does not exist.
        ConfigError: --model and a whole fine-tuned model are both given, or no base is known.
    """
    trained: Path | None = None
    run_dir: Path | None = None
    if config.adapter is not None:
        trained = _existing(config.adapter, settings)
        if (trained / "output").is_dir():
            run_dir, trained = trained, trained / "output"
        if not (trained / ADAPTER_CONFIG).is_file() and not (trained / "config.json").is_file():
            raise NotFoundError("adapter", config.adapter, hint=(
                f"{trained} holds neither {ADAPTER_CONFIG} nor config.json; expected a run "
                "directory, a run id, or a PEFT adapter directory"))
    if trained is not None and not (trained / ADAPTER_CONFIG).is_file():  # full fine-tuning
        if config.model is not None:
            raise ConfigError.one(
                f"{trained} holds a whole fine-tuned model, not an adapter; expected it alone "
                "(drop --model)", field="model, adapter", source="command line")
        model, adapter = trained.resolve(), None
    else:
        model, adapter = _base_model(config, trained, settings), trained
    own = trained if trained is not None else model
    tokenizer = own if any((own / f).is_file() for f in _TOKENIZER_FILES) else model
    return Sources(model=model, adapter=adapter.resolve() if adapter else None,
                   tokenizer=tokenizer, template=_training_template(own),
                   default_system=_run_default_system(run_dir))


def merge_model(
    sources: Sources, tokenizer: PreTrainedTokenizerBase, target: Path
) -> tuple[GreedyCheck, list[list[int]]]:
    """Save base + adapter merged (or the whole model as is) with `tokenizer` into `target`.

    Returns the greedy check and the token ids the saved model generated.

    Raises:
        InternalError: the saved model does not generate what base + adapter does.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(sources.model), dtype=torch.float32)
    if sources.adapter is not None:
        from peft import PeftModel

        logger.info("merging %s into %s", sources.adapter, sources.model)
        model = PeftModel.from_pretrained(model, str(sources.adapter))
    expected = greedy_token_ids(model, tokenizer)
    if sources.adapter is not None:
        model = model.merge_and_unload()
    model.config.use_cache = True  # training turns the cache off; inference wants it
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    del model
    saved = AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32)
    got = greedy_token_ids(saved, tokenizer)
    check = GreedyCheck(prompts=len(CHECK_PROMPTS), new_tokens=CHECK_NEW_TOKENS,
                        identical=expected == got)
    if not check.identical:
        raise InternalError(
            f"{target}: the merged model does not generate what base + adapter does: expected "
            f"identical greedy token ids on {check.prompts} prompts, got {got} for {expected}")
    return check, got


def _existing(spec: str, settings: Settings) -> Path:
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if "/" not in spec and (settings.runs / spec).is_dir():
        return settings.runs / spec
    raise NotFoundError("adapter", spec, hint=(
        f"expected a run directory, a run id under {settings.runs}, or an adapter directory"))


def _base_model(config: ExportConfig, adapter: Path | None, settings: Settings) -> Path:
    if config.model is not None:
        return resolve_model(config.model, settings)
    assert adapter is not None  # ExportConfig requires a model or an adapter
    named = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = named.get("base_model_name_or_path")
    if not base:
        raise ConfigError.one(
            f"expected a base model: {adapter / ADAPTER_CONFIG} names none, so pass --model",
            field="model", source="command line")
    try:
        return resolve_model(str(base), settings)
    except NotFoundError as e:
        raise NotFoundError("model", str(base), hint=(
            f"the base named by {adapter / ADAPTER_CONFIG}; pass --model to give it "
            f"({e.hint})")) from None


def _training_template(directory: Path) -> str | None:
    path = directory / TEMPLATE_FILE
    if not path.is_file():
        return None
    template = json.loads(path.read_text(encoding="utf-8")).get("template")
    return template if isinstance(template, str) else None


def _run_default_system(run_dir: Path | None) -> str | None:
    """model.default_system of the run's config.yaml, read alone: a run written by an older
    tuneforge must still export, even where its whole config no longer validates."""
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return None
    import yaml

    data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    model = data.get("model") if isinstance(data, dict) else None
    value = model.get("default_system") if isinstance(model, dict) else None
    return value if isinstance(value, str) and value else None
