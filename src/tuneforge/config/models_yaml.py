"""The REST training service seed's `config/models.yaml`: its `lora_config` block holds the
LoRA defaults of `POST /train` and of `scripts/train_lora.py` (so of `tuneforge train` with
that script's flags), read from the working directory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tuneforge.config.load import parse_overrides
from tuneforge.errors import ConfigError

# config/models.yaml's lora_config (PEFT names) -> RunConfig names
LORA_KEYS = {"r": "lora_rank", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
             "target_modules": "lora_target", "bias": "lora_bias", "use_dora": "use_dora",
             "use_rslora": "use_rslora"}
MODELS_YAML = Path("config") / "models.yaml"
# scripts/train_lora.py's own flags: a command that uses them is that script's, run from its
# project (where config/models.yaml lies)
SCRIPT_FLAGS = ("base_model", "dataset_path", "num_epochs", "dataset_format")


def lora_defaults(base: Path) -> dict[str, Any]:
    """The REST-service seed's LoRA defaults: `lora_config` of config/models.yaml under
    `base` (the server's or the command's working directory), by RunConfig names; {}
    without that file.

    Raises:
        ConfigError: the file is not YAML, or lora_config holds an unknown key.
    """
    path = base / MODELS_YAML
    if not path.is_file():
        return {}
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError.one(f"expected YAML: {exc}", file=str(path),
                              line=mark.line + 1 if mark else None, field="lora_config") \
            from None
    block = document.get("lora_config") if isinstance(document, dict) else None
    if not isinstance(block, dict):
        return {}
    unknown = sorted(set(block) - set(LORA_KEYS))
    if unknown:
        raise ConfigError.one(f"unknown key(s) {', '.join(unknown)}; expected "
                              f"{', '.join(LORA_KEYS)}", file=str(path),
                              field=f"lora_config.{unknown[0]}")
    return {LORA_KEYS[k]: v for k, v in block.items()}


def script_defaults(overrides: Sequence[str], base: Path) -> tuple[Mapping[str, Any], str] | None:
    """config/models.yaml's LoRA defaults for `tuneforge train` given train_lora.py's flags
    (as `load_run_config(defaults=...)` takes them); None for any other command line."""
    if not set(parse_overrides(overrides)) & set(SCRIPT_FLAGS):
        return None
    found = lora_defaults(base)
    return (found, str(base / MODELS_YAML)) if found else None
