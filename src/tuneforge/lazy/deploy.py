"""LazyLLM's deploy methods: how a TrainableModule serves its model once `update()` (or
`start()`) has it ready.

Every method here serves in the calling process, through tuneforge's engines: a causal LM
(with its fine-tuned adapter) on `serve.engine.Engine`, an embedding model or reranker on
`serve.encoders.EncoderEngine`. `auto` and `local` are the same; LazyLLM's `vllm`,
`lightllm` and `lmdeploy` are accepted and served the same way, with a warning (for vLLM, run
`tuneforge serve --backend vllm` on a CUDA machine and call it over HTTP). Keyword arguments
are the generation defaults of the module's calls (max_tokens, temperature, top_p, ...).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

from tuneforge.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployMethod:
    """A deploy method's name and the generation defaults it was given."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, **kwargs: Any) -> DeployMethod:
        return DeployMethod(self.name, {**self.kwargs, **kwargs})


auto = DeployMethod("auto")
local = DeployMethod("local")
vllm = DeployMethod("vllm")
lightllm = DeployMethod("lightllm")
lmdeploy = DeployMethod("lmdeploy")
METHODS = {m.name: m for m in (auto, local, vllm, lightllm, lmdeploy)}


def deploy_method(value: Any, kwargs: dict[str, Any]) -> DeployMethod:
    """The DeployMethod `value` names, with `kwargs` as its generation defaults.

    Raises:
        ConfigError: an unknown method.
    """
    found = value if isinstance(value, DeployMethod) else METHODS.get(str(value).lower())
    if found is None:
        raise ConfigError.one(f"expected one of deploy.{', deploy.'.join(METHODS)}, got "
                              f"{value!r}", field="deploy_method", source="TrainableModule")
    if found.name not in ("auto", "local"):
        message = (f"deploy.{found.name}: served in this process by tuneforge's engine; for "
                   "a vLLM server run `tuneforge serve --backend vllm` on a CUDA machine")
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)
    return found(**kwargs)
