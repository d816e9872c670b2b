"""The models one server process serves, and what a request's `model` names.

One engine per base model: a causal LM gets a continuous-batching `Engine` (with its LoRA
adapters), an embedding model, reranker or reward model an `EncoderEngine`. A request's
`model` may name

- a served model (`smollm2-135m-instruct`, or the name it was loaded under),
- a loaded adapter (`support`), or `base:adapter`,
- a fine-tune that is not loaded yet: a run id under the runs folder (or `base:<run id>`);
  its adapter is loaded on the served base it was trained from, under that name.

Adapters that the engine unloaded (least recently used, past its limit) are loaded again
from where they came from when a request names them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError, ForbiddenError, NotFoundError, UnsupportedError
from tuneforge.models.adapters import ADAPTER_CONFIG, adapter_dir
from tuneforge.models.sources import resolve_model
from tuneforge.serve.encoders import EncoderEngine, encoder_kind
from tuneforge.serve.engine import Engine, WeightFormat
from tuneforge.settings import Settings

logger = logging.getLogger(__name__)



@dataclass
class Served:
    """One base model in this process and the adapters it was given."""

    name: str
    model_dir: Path
    kind: str  # "generate", "embedding", "rerank" or "reward"
    engine: Any  # Engine for "generate", EncoderEngine otherwise
    adapters: dict[str, Path] = field(default_factory=dict)  # name -> adapter directory
    created: int = 0


@dataclass(frozen=True)
class Target:
    """What a request's `model` resolved to."""

    name: str  # as the request named it, echoed in responses
    served: Served
    adapter: str | None = None
# a checkpoint of a run, as /v1/fine_tuning/jobs/{id}/checkpoints names it
CHECKPOINT_NAME = re.compile(r"[\w.-]+/checkpoints/checkpoint-\d+")


class ServedModels:
    """The process's engines, by name; thread-safe."""

    def __init__(self, settings: Settings, *, max_batch: int = 16, max_queue: int = 64,
                 max_adapters: int = 8, backend: str = "auto",
                 weights: WeightFormat = "auto") -> None:
        self.settings, self.backend, self.weights = settings, backend, weights
        self.max_batch, self.max_queue, self.max_adapters = max_batch, max_queue, max_adapters
        self._served: dict[str, Served] = {}
        self._aliases: dict[str, str] = {}  # another name -> served name
        self._lock = threading.RLock()

    # -- loading -----------------------------------------------------------------------------

    def load_model(self, source: str, name: str | None = None) -> Served:
        """Serve `source` (alias, model directory, run directory or id, .gguf) as `name`.

        A model already served from the same directory is not loaded twice: `name` becomes
        another name for it.

        Raises:
            NotFoundError: `source` is no model.
            ConfigError: `name` is taken by another model or adapter.
        """
        import time

        model_dir = self._model_dir(source)
        _no_pickles(model_dir, "model_path")
        name = name or _default_name(source, model_dir)
        with self._lock:
            for served in self._served.values():
                if served.model_dir == model_dir:
                    if name != served.name:
                        self._claim(name)
                        self._aliases[name] = served.name
                    return served
            self._claim(name)
            kind, engine = self._engine(model_dir)
            served = Served(name, model_dir, kind, engine, created=int(time.time()))
            self._served[name] = served
        logger.info("serving %s (%s) from %s", name, kind, model_dir)
        return served

    def load_adapter(self, name: str, path: str, base: str | None = None) -> Served:
        """Load the LoRA adapter at `path` (run directory, run id or adapter directory) as
        `name` on the served causal LM `base` (default: the one it was trained from, else the
        only one).

        Raises:
            NotFoundError: no such base or adapter.
            ConfigError: `name` is taken by a model.
            UnsupportedError: the base is not a causal LM.
        """
        _no_pickles(adapter_dir(path, self.settings), "lora_adapter")
        with self._lock:
            served = self._base_for(path, base)
            if name in self._served or name in self._aliases:
                raise ConfigError.one(f"expected a new adapter name, got {name!r}, the name of "
                                      "a served model", field="lora_name")
            for other in self._served.values():
                if name in other.adapters and other is not served:
                    raise ConfigError.one(
                        f"expected a new adapter name, got {name!r}, loaded on {other.name}",
                        field="lora_name")
            served.engine.load_adapter(name, path)
            served.adapters[name] = Path(path)
        return served

    def unload_adapter(self, name: str) -> None:
        """Unload the adapter `name` wherever it is loaded.

        Raises:
            NotFoundError: no adapter of that name.
            StateError: a request is using it.
        """
        with self._lock:
            for served in self._served.values():
                if name in served.adapters:
                    if name in served.engine.adapter_names():
                        served.engine.unload_adapter(name)
                    del served.adapters[name]
                    return
        raise NotFoundError("adapter", name, hint=f"loaded adapters: {self._adapter_list()}")

    def close(self) -> None:
        """Stop every engine."""
        with self._lock:
            for served in self._served.values():
                close = getattr(served.engine, "close", None)
                if close is not None:
                    close()

    # -- lookup ------------------------------------------------------------------------------

    def resolve(self, model: str | None, *, kinds: tuple[str, ...] = ("generate",)) -> Target:
        """The engine (and adapter) a request's `model` names; None: the only model of a
        fitting kind. May load an adapter (a run id, or one unloaded since).

        Raises:
            NotFoundError: nothing of that name (HTTP 404).
            UnsupportedError: the model serves another kind of request.
        """
        with self._lock:
            target = self._find(model, kinds)
            if target.adapter is not None:
                engine = target.served.engine
                if target.adapter not in engine.adapter_names():  # evicted (LRU): reload
                    engine.load_adapter(target.adapter, target.served.adapters[target.adapter])
            if target.served.kind not in kinds:
                raise UnsupportedError(
                    f"model {target.name!r}", f"it is a {target.served.kind} model; this "
                    f"endpoint needs a {' or '.join(kinds)} model")
            return target

    def listing(self) -> list[dict[str, Any]]:
        """Every servable name: models, their other names, adapters (OpenAI /v1/models)."""
        rows = []
        with self._lock:
            for served in self._served.values():
                rows.append({"id": served.name, "object": "model", "created": served.created,
                             "owned_by": "tuneforge", "root": str(served.model_dir),
                             "parent": None, "kind": served.kind})
                rows += [{"id": alias, "object": "model", "created": served.created,
                          "owned_by": "tuneforge", "root": str(served.model_dir),
                          "parent": served.name, "kind": served.kind}
                         for alias, target in self._aliases.items() if target == served.name]
                rows += [{"id": name, "object": "model", "created": served.created,
                          "owned_by": "tuneforge", "root": str(path), "parent": served.name,
                          "kind": served.kind}
                         for name, path in served.adapters.items()]
        return rows

    def engines(self) -> list[Served]:
        with self._lock:
            return list(self._served.values())

    # -- internals ---------------------------------------------------------------------------

    def _find(self, model: str | None, kinds: tuple[str, ...]) -> Target:
        if model is None or model == "":
            fitting = [s for s in self._served.values() if s.kind in kinds]
            if len(fitting) == 1:
                return Target(fitting[0].name, fitting[0])
            raise NotFoundError("model", "", hint=f"name one of: {self._names()}")
        served = self._served.get(self._aliases.get(model, model))
        if served is not None:
            return Target(model, served)
        for candidate in self._served.values():
            if name_adapter := _split(model, candidate.name):
                return Target(model, candidate, self._adapter(candidate, name_adapter))
        for alias, base in self._aliases.items():
            if name_adapter := _split(model, alias):
                return Target(model, self._served[base],
                              self._adapter(self._served[base], name_adapter))
        for candidate in self._served.values():
            if model in candidate.adapters:
                return Target(model, candidate, model)
        if self._is_run_adapter(model):  # a fine-tune not loaded yet
            served = self._base_for(model, None)
            self.load_adapter(model, model, served.name)
            return Target(model, served, model)
        raise NotFoundError("model", model, hint=f"served: {self._names()}")

    def _adapter(self, served: Served, name: str) -> str:
        if name in served.adapters:
            return name
        if self._is_run_adapter(name) or Path(name).expanduser().is_dir():
            self.load_adapter(name, name, served.name)
            return name
        raise NotFoundError("adapter", name, hint=f"loaded on {served.name}: "
                            f"{', '.join(served.adapters) or 'none'}")

    def _is_run_adapter(self, name: str) -> bool:
        """A run id whose output is an adapter, or `<run id>/checkpoints/checkpoint-<step>`
        (a checkpoint the fine-tuning API lists)."""
        run = self.settings.runs / name
        if "/" not in name:
            return (run / "output" / ADAPTER_CONFIG).is_file()
        return CHECKPOINT_NAME.fullmatch(name) is not None and (run / ADAPTER_CONFIG).is_file()

    def _base_for(self, path: str, base: str | None) -> Served:
        """The served causal LM an adapter goes on: `base`, else the one named by its
        adapter_config.json, else the only causal LM."""
        generators = [s for s in self._served.values() if s.kind == "generate"]
        if base is not None:
            served = self._served.get(self._aliases.get(base, base))
            if served is None:
                raise NotFoundError("model", base, hint=f"served: {self._names()}")
            if served.kind != "generate":
                raise UnsupportedError(f"model {base!r}", "LoRA adapters are served on causal "
                                       f"LMs; it is a {served.kind} model")
            return served
        trained_on = _adapter_base(adapter_dir(path, self.settings))
        for served in generators:
            if trained_on is not None and served.model_dir == trained_on:
                return served
        if len(generators) == 1:
            return generators[0]
        raise NotFoundError("model", str(trained_on or ""), hint=(
            f"the base model of adapter {path!r}; serve it first, or name it as BASE:ADAPTER "
            f"(served: {self._names()})"))

    def _model_dir(self, source: str) -> Path:
        path = Path(source).expanduser()
        if not path.exists() and "/" not in source and (self.settings.runs / source).is_dir():
            path = self.settings.runs / source
        if (path / "output" / "config.json").is_file():  # a run that wrote a whole model
            return (path / "output").resolve()
        adapter = next((d for d in (path / "output", path) if (d / ADAPTER_CONFIG).is_file()),
                       None)
        if adapter is not None and encoder_kind(adapter) == "reward":  # an rm LoRA run
            return adapter.resolve()
        if adapter is not None:
            raise NotFoundError("model", source, hint=(
                "that is a LoRA adapter: serve its base model and load it as an adapter "
                "(BASE:ADAPTER, /v1/load_lora_adapter, or lora_adapter in /models/load)"))
        return resolve_model(source, self.settings).resolve()

    def _engine(self, model_dir: Path) -> tuple[str, Any]:
        kind = encoder_kind(model_dir)
        if kind is not None:
            return kind, EncoderEngine(str(model_dir), self.settings, kind=kind)
        from tuneforge.serve.vllm_backend import VLLMBackend, vllm_available

        limits = dict(max_batch=self.max_batch, max_queue=self.max_queue,
                      max_adapters=self.max_adapters)
        if self.backend == "vllm" or (self.backend == "auto" and vllm_available()):
            return "generate", VLLMBackend(str(model_dir), self.settings, **limits)
        return "generate", Engine(str(model_dir), self.settings, weights=self.weights,
                                  **limits).start()

    def _claim(self, name: str) -> None:
        taken = name in self._served or name in self._aliases or any(
            name in s.adapters for s in self._served.values())
        if taken:
            raise ConfigError.one(f"expected a new model name, got {name!r}, which is taken",
                                  field="model_name")
        if not name or ":" in name:
            raise ConfigError.one(f"expected a name without ':', got {name!r}",
                                  field="model_name")

    def _names(self) -> str:
        return ", ".join([*self._served, *self._aliases]) or "none"

    def _adapter_list(self) -> str:
        return ", ".join(a for s in self._served.values() for a in s.adapters) or "none"


PICKLED = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def _no_pickles(directory: Path, field: str) -> None:
    """The server loads weights from safetensors only: unpickling runs code.

    Raises:
        ForbiddenError: the directory holds pickled weights and no safetensors (HTTP 403).
    """
    if not directory.is_dir():
        return  # a .gguf file, read by its own parser
    names = [p.name for p in directory.iterdir()]
    if any(n.endswith(PICKLED) for n in names) and not any(
            n.endswith(".safetensors") for n in names):
        raise ForbiddenError(f"{directory} holds pickled weights only; the server loads "
                             "safetensors, since unpickling can run code", field=field,
                             hint="save them again with save_pretrained() (safetensors)")


def _split(model: str, base: str) -> str | None:
    """The adapter part of `base:adapter`, if `model` has that form for this base."""
    prefix = base + ":"
    return model[len(prefix):] or None if model.startswith(prefix) else None


def _default_name(source: str, model_dir: Path) -> str:
    path = Path(source).expanduser()
    if path.exists():
        return (path.name if path.name != "output" else path.parent.name).removesuffix(".gguf")
    return source


def _adapter_base(directory: Path) -> Path | None:
    """The base model directory an adapter's adapter_config.json names, if it exists here.

    Raises:
        ConfigError: the file is not a JSON object.
    """
    config = directory / ADAPTER_CONFIG
    try:
        named = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError.one(f"expected a JSON object, got unreadable text ({error})",
                              source=str(config)) from None
    base = named.get("base_model_name_or_path") if isinstance(named, dict) else None
    if not base:
        return None
    path = Path(base).expanduser()
    return path.resolve() if path.is_dir() else None
