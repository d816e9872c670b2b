"""Start `tuneforge serve`: load the configured models and adapters, then run uvicorn."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from tuneforge.config.serve import ServeConfig
from tuneforge.errors import ConfigError, UserError
from tuneforge.jobs.queue import JobQueue
from tuneforge.server.models import ServedModels
from tuneforge.server.security import check_exposure
from tuneforge.settings import Settings

logger = logging.getLogger(__name__)


def build_models(config: ServeConfig, settings: Settings) -> ServedModels:
    """The engines `config` names, loaded; adapters on their bases.

    Raises:
        ConfigError: a `--model` or `--adapter` value is malformed.
        NotFoundError: a model or adapter does not exist.
    """
    models = ServedModels(settings, max_batch=config.max_batch, max_queue=config.max_queue,
                          max_adapters=config.max_adapters, backend=config.backend,
                          weights=config.weights)
    try:
        for spec in config.models:
            name, sep, source = spec.partition("=")
            models.load_model(source, name or None) if sep else models.load_model(spec)
        for spec in config.adapters:
            named, _, path = spec.partition("=")
            if not path:
                raise ConfigError.one(f"expected NAME=PATH or BASE:NAME=PATH, got {spec!r}",
                                      field="adapters")
            base, _, name = named.rpartition(":")
            models.load_adapter(name, path, base or None)
    except BaseException:
        models.close()
        raise
    return models


def serve(config: ServeConfig, settings: Settings,
          on_ready: Callable[[str, ServedModels], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; `on_ready(url, models)` once the port is bound."""
    import uvicorn
    from transformers.utils import logging as hf_logging

    from tuneforge.server.app import create_app

    hf_logging.disable_progress_bar()  # the CLI says what is served; no tqdm per model load
    check_exposure(config.host, config.api_key)
    models = build_models(config, settings)
    try:
        listener = _bind(config.host, config.port)
    except BaseException:
        models.close()
        raise
    host, port = listener.getsockname()[:2]
    queue = JobQueue(settings, slots=config.worker_slots, auto_resume=config.auto_resume)
    if config.worker_slots > 0:
        queue.start()
    server = uvicorn.Server(uvicorn.Config(create_app(models, config, settings, queue),
                                           log_level="warning", timeout_graceful_shutdown=5))
    if on_ready is not None:
        on_ready(f"http://{host}:{port}", models)
    server.run(sockets=[listener])


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that port 0 gives a real port to print."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise UserError(f"serve: cannot listen on {host}:{port}: {error.strerror}",
                        hint="pick another --port, or stop what uses it") from None
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener
