"""The engine on the real SmolLM2-135M-Instruct (slow: `make test-slow`)."""

from __future__ import annotations

import pytest

from tuneforge.serve.engine import Engine
from tuneforge.serve.requests import ChatMessage, GenerationRequest
from tuneforge.settings import Settings

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow.",
             "Write one sentence about the sea."]


def test_real_model_batched_greedy_equals_transformers_generate() -> None:
    import torch

    with Engine("smollm2-135m-instruct", Settings(), max_batch=4) as engine:
        requests = [GenerationRequest(messages=(ChatMessage(role="user", content=q),),
                                      max_tokens=24, temperature=0.0) for q in QUESTIONS]
        streams = [engine.submit(r) for r in requests]  # decoded together in one batch
        answers = [s.collect().text for s in streams]
        model = engine._model  # the same weights, through plain transformers generate
        for request, answer in zip(requests, answers, strict=True):
            ids = engine.tokenizer(engine.render_prompt(request), add_special_tokens=False,
                                   return_tensors="pt")["input_ids"]
            with torch.inference_mode():
                out = model.generate(ids, max_new_tokens=24, do_sample=False)
            expected = engine.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            assert answer == expected
    assert "Paris" in answers[0]
