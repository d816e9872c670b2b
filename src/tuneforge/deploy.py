"""LazyLLM's `deploy` module name: `from tuneforge import deploy; deploy.auto`. The methods
live in tuneforge.lazy.deploy."""

from tuneforge.lazy.deploy import DeployMethod, auto, lightllm, lmdeploy, local, vllm

__all__ = ["DeployMethod", "auto", "lightllm", "lmdeploy", "local", "vllm"]
