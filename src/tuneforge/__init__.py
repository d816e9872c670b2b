"""tuneforge: fine-tune, publish, serve and evaluate open models.

Nothing heavy is imported here: `import tuneforge` must stay cheap for the CLI and server.
LazyLLM's names (`tuneforge.TrainableModule`, `Document`, `Retriever`, `Reranker`, and the
modules `finetune`, `deploy`, `launchers`) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"TrainableModule": "tuneforge.lazy.module", "Document": "tuneforge.lazy.rag",
         "Retriever": "tuneforge.lazy.rag", "Reranker": "tuneforge.lazy.rag",
         "DocNode": "tuneforge.lazy.rag"}
_MODULES = ("finetune", "deploy", "launchers")

__all__ = ["DocNode", "Document", "Reranker", "Retriever", "TrainableModule", "__version__",
           "deploy", "finetune", "launchers"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"tuneforge.{name}")
    raise AttributeError(f"module 'tuneforge' has no attribute {name!r}")
