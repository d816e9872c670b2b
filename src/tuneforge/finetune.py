"""LazyLLM's `finetune` module name: `from tuneforge import finetune; finetune.llamafactory`.
The frameworks live in tuneforge.lazy.finetune."""

from tuneforge.lazy.finetune import (
    Framework,
    alpacalora,
    auto,
    flagembedding,
    llamafactory,
    peft,
)

__all__ = ["Framework", "alpacalora", "auto", "flagembedding", "llamafactory", "peft"]
