"""The vLLM backend; runs only where vLLM and a CUDA GPU are (never in CPU CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.errors import UnsupportedError
from tuneforge.serve.requests import GenerationRequest
from tuneforge.serve.vllm_backend import VLLMBackend, vllm_available
from tuneforge.settings import Settings


def test_without_vllm_and_cuda_the_error_says_what_to_use(tiny_llm_dir: Path) -> None:
    if vllm_available():
        pytest.skip("vLLM and CUDA are present")
    with pytest.raises(UnsupportedError, match="--backend transformers"):
        VLLMBackend(str(tiny_llm_dir), Settings())


@pytest.mark.gpu
@pytest.mark.skipif(not vllm_available(), reason="needs vLLM and a CUDA GPU")
def test_vllm_greedy_matches_the_transformers_engine(
        tiny_llm_dir: Path, tiny_adapters: dict[str, Path]) -> None:
    from tuneforge.serve.engine import Engine

    request = GenerationRequest(prompt="Hello", max_tokens=8, temperature=0.0, ignore_eos=True)
    backend = VLLMBackend(str(tiny_llm_dir), Settings(), max_adapters=2)
    try:
        backend.load_adapter("first", tiny_adapters["first"])
        ours = backend.complete(request)
        adapted = backend.complete(request.model_copy(update={"adapter": "first"}))
    finally:
        backend.close()
    with Engine(str(tiny_llm_dir), Settings()) as engine:
        assert ours.text == engine.complete(request).text
    assert ours.usage.completion_tokens == 8
    assert adapted.text != ours.text
