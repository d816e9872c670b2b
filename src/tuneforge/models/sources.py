"""Where a model comes from; `resolve_model` turns any source into a local directory.

A source is, in the order tried:

1. a bundled alias (resources/presets/models.yaml). A GGUF alias (`smollm2-135m-instruct`)
   is dequantised once into `settings.models/<alias>`; `resolve_model` does that on first
   use, logging it, since it needs no network (about a minute). A folder alias
   (`minilm-l6-v2`) is used in place, inside its pip package.
2. a local path: a transformers directory (with config.json), or a `.gguf` file, prepared
   once into `settings.models/gguf-<sha1 of path, size, mtime>`;
3. a name under `settings.models` (a prepared model, or any directory copied there);
4. a hub id (`org/name`) already in the local Hugging Face cache.

There is no network at run time: a hub id that is not cached is a NotFoundError saying so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config.presets import ModelPreset, model_presets, preset_files
from tuneforge.data.tokenizer import HUB_ID, file_key, load_tokenizer, packaged_gguf
from tuneforge.errors import ConfigError, NotFoundError, StateError, UnsupportedError
from tuneforge.models.gguf import RECORD_FILE, convert_gguf, read_record
from tuneforge.settings import Settings

logger = logging.getLogger(__name__)

NO_NETWORK = (
    "tuneforge has no network at run time: give a local directory or .gguf file, an alias "
    "(see `tuneforge models list`), or download the hub id into the Hugging Face cache beforehand"
)


@dataclass(frozen=True)
class ModelInfo:
    """One row of `tuneforge models list`.

    `prepared` says the model is ready to load: a GGUF alias has been dequantised, a folder
    alias's package is installed, a directory under settings.models exists.
    `path` is None only for a folder alias whose package is not installed.
    """

    name: str
    kind: str
    path: Path | None
    prepared: bool
    source: str


def resolve_model(
    name_or_path: str, settings: Settings, *, trust_remote_code: bool = False
) -> Path:
    """The local transformers directory of an alias, path, prepared name or cached hub id.

    A GGUF alias or `.gguf` file not prepared yet is prepared now (see `prepare_model`).

    Raises:
        NotFoundError: nothing matches `name_or_path` locally (there is no network).
        ConfigError: the model ships its own code and `trust_remote_code` is False.
        UnsupportedError: the installed transformers cannot read the model's config.
    """
    preset = model_presets().get(name_or_path)
    if preset is not None:
        if not preset.needs_preparation:
            return preset_files(name_or_path)
        if read_record(settings.models / name_or_path) is None:
            logger.info("%s is not prepared yet: preparing it now, once", name_or_path)
        return prepare_model(name_or_path, settings, trust_remote_code=trust_remote_code)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise NotFoundError(
                "model", name_or_path,
                hint="a model file must be a .gguf; otherwise give a directory with config.json",
            )
        return prepare_model(str(path), settings, trust_remote_code=trust_remote_code)
    if path.is_dir():
        return _checked_directory(path, name_or_path, trust_remote_code)
    if _is_plain_name(name_or_path) and (settings.models / name_or_path).is_dir():
        return _checked_directory(settings.models / name_or_path, name_or_path, trust_remote_code)
    if HUB_ID.fullmatch(name_or_path) and not name_or_path.startswith("."):
        return _checked_directory(_from_hub_cache(name_or_path), name_or_path, trust_remote_code)
    raise NotFoundError(
        "model",
        name_or_path,
        hint=f"no such file or directory, alias or prepared model in {settings.models}; "
        + NO_NETWORK,
    )


def prepare_model(
    alias_or_gguf: str, settings: Settings, *, force: bool = False, trust_remote_code: bool = False
) -> Path:
    """Dequantise a GGUF alias or `.gguf` file once into a float32 safetensors directory.

    The directory (`settings.models/<alias>` or `settings.models/gguf-<sha1>`) holds the
    weights, config, tokenizer with its chat template, and tuneforge_model.json recording the
    source and the greedy-equality check. A prepared directory is reused unless `force`.
    A folder alias needs no preparation: its folder is returned.

    Raises:
        NotFoundError: not an alias or a .gguf file, or the alias's package is not installed.
        StateError: the target exists but was not prepared by tuneforge (and not `force`).
        InternalError: the prepared model does not generate what the GGUF does (a bug).
    """
    preset = model_presets().get(alias_or_gguf)
    if preset is not None and not preset.needs_preparation:
        logger.info("%s is used in place from its package; nothing to prepare", alias_or_gguf)
        return preset_files(alias_or_gguf)
    if preset is not None:
        gguf, name, package = packaged_gguf(alias_or_gguf), alias_or_gguf, preset.package
    else:
        gguf = Path(alias_or_gguf).expanduser()
        if not gguf.is_file() or gguf.suffix != ".gguf":
            raise NotFoundError(
                "model", alias_or_gguf,
                hint="expected an alias (" + ", ".join(model_presets()) + ") or a .gguf file",
            )
        name, package = f"gguf-{file_key(gguf)}", None
    target = settings.models / name
    if target.exists() and not force:
        if read_record(target) is not None:
            return target
        raise StateError(
            f"{target}: expected a directory prepared by tuneforge (with {RECORD_FILE}), got "
            "another directory",
            hint="move it away, or pass --force to replace it",
        )
    tokenizer = load_tokenizer(alias_or_gguf if preset is not None else str(gguf), settings.cache)
    convert_gguf(gguf, tokenizer, target, name=name, package=package,
                 trust_remote_code=trust_remote_code)
    logger.info("prepared %s in %s", alias_or_gguf, target)
    return target


def list_models(settings: Settings) -> list[ModelInfo]:
    """The bundled aliases (models.yaml order), then every other model dir in settings.models."""
    presets = model_presets()
    infos = [_preset_info(alias, preset, settings) for alias, preset in presets.items()]
    if settings.models.is_dir():
        for path in sorted(settings.models.iterdir()):
            if path.name.startswith(".") or path.name in presets:
                continue
            if not (path / "config.json").is_file():
                continue
            record = read_record(path)
            source = f"gguf {record.source.file}" if record else "local directory"
            kind = record.kind if record else _kind_of(path)
            infos.append(ModelInfo(path.name, kind, path, True, source))
    return infos


def _preset_info(alias: str, preset: ModelPreset, settings: Settings) -> ModelInfo:
    try:
        files = preset_files(alias)
    except NotFoundError as e:
        files, source = None, f"{preset.source} ({e.hint})"
    else:
        source = preset.source
    if preset.needs_preparation:
        target = settings.models / alias
        return ModelInfo(alias, preset.kind, target, read_record(target) is not None, source)
    return ModelInfo(alias, preset.kind, files, files is not None, source)


def _checked_directory(path: Path, spec: str, trust_remote_code: bool) -> Path:
    """`path` if it holds a config transformers can read with this trust_remote_code."""
    from transformers import AutoConfig

    config = path / "config.json"
    if not config.is_file():
        raise NotFoundError(
            "model", spec, hint=f"{path} holds no config.json; expected a transformers model"
        )
    try:
        AutoConfig.from_pretrained(
            str(path), trust_remote_code=trust_remote_code, local_files_only=True
        )
    except ValueError as e:
        if "trust_remote_code" in str(e) and not trust_remote_code:
            raise ConfigError.one(
                f"{path} ships its own model code: expected true to run it, got false",
                field="model.trust_remote_code",
            ) from None
        raise UnsupportedError(f"model {spec}", f"transformers cannot read {config}: {e}") from e
    except OSError as e:
        raise UnsupportedError(f"model {spec}", f"{config} cannot be read: {e}") from e
    return path.resolve()


def _from_hub_cache(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError

    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except IncompleteSnapshotError as e:  # some files missing; transformers may not need them
        snapshot = getattr(e, "snapshot_path", None)
        if snapshot and (Path(snapshot) / "config.json").is_file():
            return Path(snapshot)
        raise NotFoundError("model", hub_id, hint=f"only partly in the cache; {NO_NETWORK}") from e
    except (OSError, ValueError) as e:  # LocalEntryNotFoundError, HFValidationError
        raise NotFoundError(
            "model", hub_id, hint=f"not in the local Hugging Face cache; {NO_NETWORK}"
        ) from e


def _is_plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def _kind_of(path: Path) -> str:
    """causal-lm, embedding or other, from config.json's architectures and modules.json."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "other"
    if any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or []):
        return "causal-lm"
    return "embedding" if (path / "modules.json").is_file() else "other"
