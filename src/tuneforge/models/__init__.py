"""Model sources: bundled aliases, prepared GGUF conversions, local directories, the HF cache.

sources.py resolves and lists models; gguf.py turns a GGUF into a checked float32 directory.
Nothing heavy is imported here: torch and transformers load inside the functions that use them.
"""

from tuneforge.models.sources import ModelInfo, list_models, prepare_model, resolve_model

__all__ = ["ModelInfo", "list_models", "prepare_model", "resolve_model"]
