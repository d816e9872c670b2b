"""The fast decoding step (serve/decode.py) against transformers' forward: logits, greedy
answers, LoRA rows in a mixed batch, biases (Qwen2), and the fallbacks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tuneforge.serve.engine import Engine
from tuneforge.serve.requests import GenerationRequest
from tuneforge.settings import Settings

PROMPTS = ["Hello there, how are you", "The quick brown fox jumps", "你好，今天怎么样",
           "What is the capital of France?"]


def greedy(prompt: str, adapter: str | None = None, tokens: int = 20) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, adapter=adapter, temperature=0.0, max_tokens=tokens,
                             ignore_eos=True)


def _model_dir(tiny_llm_dir: Path, target: Path, model_type: str) -> Path:
    """A random tiny model of `model_type` with tiny_llm_dir's tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llm_dir))
    torch.manual_seed(3)
    options = {"qwen3": {"head_dim": 4}}.get(model_type, {})
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False, **options)
    model = AutoModelForCausalLM.from_config(config)
    if model_type == "qwen2":  # non-zero q/k/v biases, so the fused bias really counts
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("proj.bias"):
                    param.normal_(0, 0.5)
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


def _batch_logits(engine: Engine, requests: list[GenerationRequest]) -> tuple[object, object]:
    """Prefill `requests` together (engine not started), decode two tokens, then one more
    step's logits from the fast step and from transformers' forward on copies of the cache."""
    import torch

    for request in requests:
        engine.submit(request)
    joining = list(engine._waiting)
    engine._waiting.clear()
    engine._prefill(joining)
    engine._step()
    engine._step()
    running = engine._running
    width = engine._width()
    lengths = torch.tensor([s.cached for s in running])
    mask = torch.arange(width + 1)[None, :] >= (width - lengths)[:, None]
    tokens = torch.tensor([s.last for s in running])
    adapters = [s.adapter for s in running]
    assert engine._fast is not None and engine._fast.supports(adapters)
    fast = engine._fast.step(tokens, lengths, mask, copy.deepcopy(engine._cache), adapters)
    slow = engine._forward(tokens[:, None], engine._cache, adapters, mask.long(),
                           lengths[:, None])
    return fast, slow


def _tolerance(engine: Engine) -> dict[str, float]:
    """allclose's tolerances for the engine's products: float32 rounding, or bf16's (whose
    inputs round to 8 significant bits, so the fused and unfused products differ more)."""
    if engine.weights in ("bfloat16", "auto"):
        return {"atol": 1e-2, "rtol": 2e-2}
    return {"atol": 1e-5, "rtol": 1e-4}


WEIGHTS = ["float32", "float16", "bfloat16", "auto"]  # bf16 ones fall back without native bf16


@pytest.mark.parametrize("weights", WEIGHTS)
def test_fast_step_logits_equal_the_forward_with_mixed_adapters(
        tiny_llm_dir: Path, tiny_adapters: dict[str, Path], weights: str) -> None:
    import torch

    engine = Engine(str(tiny_llm_dir), Settings(), max_batch=8, weights=weights)  # type: ignore[arg-type]
    for name, path in tiny_adapters.items():
        engine.load_adapter(name, path)
    requests = [greedy(PROMPTS[0]), greedy(PROMPTS[1], "first"), greedy(PROMPTS[2], "alpaca"),
                greedy(PROMPTS[3], "first"), greedy(PROMPTS[1])]
    fast, slow = _batch_logits(engine, requests)
    assert torch.allclose(fast, slow, **_tolerance(engine))  # type: ignore[arg-type]
    engine.close()


@pytest.mark.parametrize("weights", WEIGHTS)
def test_fast_prefill_equals_the_forward_with_padding_and_mixed_adapters(
        tiny_llm_dir: Path, tiny_adapters: dict[str, Path], weights: str) -> None:
    import torch
    from transformers.cache_utils import Cache

    from tuneforge.serve.engine import _growing_layer
    from tuneforge.serve.prompts import BASE

    engine = Engine(str(tiny_llm_dir), Settings(), weights=weights)  # type: ignore[arg-type]
    for name, path in tiny_adapters.items():
        engine.load_adapter(name, path)
    prompts = [engine.tokenizer(p)["input_ids"] for p in PROMPTS]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    assert mask.min() == 0  # the prompts' lengths differ: some rows are padded
    adapters = [BASE, "first", "alpaca", "first"]
    assert engine._fast is not None and engine._fast.supports(adapters)
    fast_cache = Cache(layer_class_to_replicate=_growing_layer())
    fast = engine._fast.prefill(ids, mask, fast_cache, adapters)
    cache = Cache(layer_class_to_replicate=_growing_layer())
    slow = engine._forward(ids, cache, adapters, mask, (mask.cumsum(-1) - 1).clamp(min=0))
    assert torch.allclose(fast, slow, atol=1e-5, rtol=1e-4)
    # the cache holds the same keys and values in every column a row attends to
    for mine, theirs in zip(fast_cache.layers, cache.layers, strict=True):
        attended = mask.bool()[:, None, :, None]
        for got, want in ((mine.keys, theirs.keys), (mine.values, theirs.values)):
            # rtol: float16 weights, values in the hundreds (AVX-512 FBGEMM rounds otherwise)
            assert torch.allclose(got * attended, want * attended, **_tolerance(engine))
        assert torch.isfinite(mine.keys).all() and torch.isfinite(mine.values).all()
    # one prompt alone: no padding, no mask (causal attention)
    alone = torch.tensor([prompts[2]])
    fast = engine._fast.prefill(alone, None, Cache(layer_class_to_replicate=_growing_layer()),
                                ["alpaca"])
    slow = engine._forward(alone, Cache(layer_class_to_replicate=_growing_layer()), ["alpaca"])
    assert torch.allclose(fast, slow, atol=1e-5, rtol=1e-4)
    engine.close()


def test_a_wide_float16_product_equals_the_plain_one_eager_and_scripted() -> None:
    import torch

    from tuneforge.serve.layers import Fp16Linear, WideFp16Linear

    torch.manual_seed(0)
    columns = 2 * WideFp16Linear.COLUMNS + 100  # two full blocks and a short one
    weight, bias = torch.randn(columns, 24), torch.randn(columns)
    wide, plain = WideFp16Linear(weight, bias), Fp16Linear(weight, bias)
    assert len(wide.parts) == 3
    x = torch.randn(5, 24)
    expected = plain.eager(x)
    assert torch.allclose(wide.eager(x), expected, atol=1e-5)
    assert torch.allclose(torch.jit.script(wide)(x), expected, atol=1e-5)


def test_fast_and_transformers_decoding_answer_the_same(
        tiny_llm_dir: Path, tiny_adapters: dict[str, Path]) -> None:
    answers = {}
    for fast in (True, False):
        with Engine(str(tiny_llm_dir), Settings(), max_batch=4, fast_decode=fast) as engine:
            assert (engine._fast is not None) == fast
            for name, path in tiny_adapters.items():
                engine.load_adapter(name, path)
            streams = [engine.submit(greedy(p, adapter)) for p in PROMPTS
                       for adapter in (None, "first", "alpaca")]
            answers[fast] = [s.collect() for s in streams]
    assert answers[True] == answers[False]
    # the adapters really change the answers (so the LoRA rows were applied)
    assert len({a.text for a in answers[True][:3]}) == 3


def test_qwen2_biases_go_through_the_fast_step(tiny_llm_dir: Path, tmp_path: Path) -> None:
    import torch

    model_dir = _model_dir(tiny_llm_dir, tmp_path / "qwen2", "qwen2")
    engine = Engine(str(model_dir), Settings(), max_batch=4)
    assert engine._fast is not None
    fast, slow = _batch_logits(engine, [greedy(PROMPTS[0]), greedy(PROMPTS[2])])
    assert torch.allclose(fast, slow, atol=1e-5, rtol=1e-4)  # type: ignore[arg-type]
    engine.close()


def test_other_architectures_decode_through_transformers(tiny_llm_dir: Path,
                                                         tmp_path: Path) -> None:
    # Qwen3 normalises q and k per head: the fast step does not, so the engine keeps
    # transformers' forward, and answers as transformers does
    model_dir = _model_dir(tiny_llm_dir, tmp_path / "qwen3", "qwen3")
    with Engine(str(model_dir), Settings()) as engine:
        assert engine._fast is None
        first = engine.complete(greedy(PROMPTS[0]))
        assert first.usage.completion_tokens == 20
        assert engine.complete(greedy(PROMPTS[0])) == first


def test_a_dora_adapter_is_refused_clearly(tiny_llm_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.errors import UnsupportedError

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir), dtype=torch.float32)
    torch.manual_seed(4)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, use_dora=True,
                                                  target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(str(tmp_path / "dora"))
    with Engine(str(tiny_llm_dir), Settings()) as engine:
        plain = engine.complete(greedy(PROMPTS[0]))
        with pytest.raises(UnsupportedError, match="DoRA.*tuneforge export --merge"):
            engine.load_adapter("dora", tmp_path / "dora")
        assert engine.adapter_names() == []
        assert engine.complete(greedy(PROMPTS[0])) == plain  # the engine serves on


@pytest.mark.parametrize("method", ["step", "prefill"])
def test_a_step_that_disagrees_at_start_up_is_not_used(
        tiny_llm_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, method: str) -> None:
    # a fault injected into the fast step or prefill: its logits move by 0.1, so the
    # start-up check must find the difference and keep transformers' forward
    from tuneforge.serve.decode import FastDecoder

    original = getattr(FastDecoder, method)
    monkeypatch.setattr(FastDecoder, method, lambda self, *a: original(self, *a) + 0.1)
    with caplog.at_level("WARNING"), Engine(str(tiny_llm_dir), Settings()) as engine:
        assert engine._fast is None
        assert engine.complete(greedy(PROMPTS[0])).usage.completion_tokens == 20
    assert "disagrees with transformers' forward" in caplog.text
