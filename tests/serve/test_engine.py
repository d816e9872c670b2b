"""The engine: greedy equals generate(), continuous batching, adapters, stops, cancel, queue."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tuneforge.errors import NotFoundError, OverloadedError
from tuneforge.serve.engine import Engine
from tuneforge.serve.requests import ChatMessage, GenerationRequest
from tuneforge.serve.stream import Detokenizer
from tuneforge.settings import Settings

PROMPTS = ["Hello there, how are you", "The quick brown fox", "What is the capital of France?",
           "你好，今天怎么样", "Give three tips"]


@pytest.fixture
def engine(tiny_llm_dir: Path) -> Iterator[Engine]:
    """A started engine on the tiny Llama, closed after the test."""
    with Engine(str(tiny_llm_dir), Settings(), max_batch=4, max_queue=8, max_adapters=2) as e:
        yield e


def greedy(prompt: str, **options: Any) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, temperature=0.0, **options)


def reference_greedy(model_dir: Path, prompt: str, max_new_tokens: int,
                     adapter: Path | None = None) -> str:
    """Plain model.generate, greedy, as the engine should answer alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    # the engine never ends on half a multi-byte character
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).rstrip("\ufffd")


def test_greedy_single_request_equals_generate_and_repeats(engine: Engine,
                                                           tiny_llm_dir: Path) -> None:
    first = engine.complete(greedy(PROMPTS[0], max_tokens=24))
    second = engine.complete(greedy(PROMPTS[0], max_tokens=24))
    assert first == second
    assert first.text == reference_greedy(tiny_llm_dir, PROMPTS[0], 24)
    assert first.finish_reason in ("stop", "length")
    assert first.usage.prompt_tokens == len(engine.tokenizer(PROMPTS[0])["input_ids"])
    assert 1 <= first.usage.completion_tokens <= 24


def test_concurrent_requests_each_equal_their_solo_answer(engine: Engine) -> None:
    solo = [engine.complete(greedy(p, max_tokens=16 + 3 * i)) for i, p in enumerate(PROMPTS)]
    results: dict[int, Any] = {}

    def ask(i: int) -> None:
        results[i] = engine.complete(greedy(PROMPTS[i], max_tokens=16 + 3 * i))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [results[i] for i in range(len(PROMPTS))] == solo


def test_two_adapters_answer_differently_in_one_batch(
        tiny_llm_dir: Path, tiny_adapters: dict[str, Path]) -> None:
    engine = Engine(str(tiny_llm_dir), Settings(), max_batch=4)
    engine.load_adapter("a", tiny_adapters["first"])
    engine.load_adapter("b", tiny_adapters["alpaca"])  # a run dir: its output/ holds it
    # queued before the scheduler starts, so all three join the same batch
    streams = {name: engine.submit(greedy(PROMPTS[1], max_tokens=12, adapter=name))
               for name in ("a", "b", None)}
    with engine:
            answers = {name: s.collect().text for name, s in streams.items()}
    assert len(set(answers.values())) == 3
    assert answers["a"] == reference_greedy(tiny_llm_dir, PROMPTS[1], 12,
                                            tiny_adapters["first"])
    assert answers[None] == reference_greedy(tiny_llm_dir, PROMPTS[1], 12)


def test_adapters_past_max_are_unloaded_least_recently_used(
        engine: Engine, tiny_adapters: dict[str, Path]) -> None:
    engine.load_adapter("a", tiny_adapters["first"])
    engine.load_adapter("b", tiny_adapters["alpaca"])
    engine.complete(greedy("Hello", max_tokens=2, adapter="a"))  # a is now the most recent
    engine.load_adapter("c", tiny_adapters["first"])
    assert engine.adapter_names() == ["a", "c"]
    with pytest.raises(NotFoundError):
        engine.submit(greedy("Hello", adapter="b"))
    engine.unload_adapter("a")
    engine.unload_adapter("c")
    assert engine.adapter_names() == []
    assert engine.complete(greedy("Hello", max_tokens=3)).usage.completion_tokens >= 1


def test_stop_string_ends_the_answer_before_it(engine: Engine) -> None:
    full = engine.complete(greedy(PROMPTS[2], max_tokens=24)).text
    stop = full[5:8]
    assert stop and full.find(stop) == 5
    cut = engine.complete(greedy(PROMPTS[2], max_tokens=24, stop=(stop,)))
    assert cut.text == full[:5]
    assert cut.finish_reason == "stop"


def test_cancel_stops_generation_and_frees_the_slot(tiny_llm_dir: Path) -> None:
    with Engine(str(tiny_llm_dir), Settings(), max_batch=1) as engine:
        # a stop that never matches keeps the first request running as long as it may
        long = engine.submit(GenerationRequest(prompt="The", max_tokens=100_000, seed=0))
        next(iter(long))
        long.cancel()
        after = engine.complete(greedy("Hello", max_tokens=4))
        list(long)  # what it sent before the cancel took effect
        assert long.finish_reason == "cancelled"
        assert long.usage.completion_tokens < 100_000
        assert after.usage.completion_tokens >= 1


def test_full_queue_raises_overloaded(tiny_llm_dir: Path) -> None:
    engine = Engine(str(tiny_llm_dir), Settings(), max_batch=1, max_queue=2)  # not started
    first, second = (engine.submit(greedy("Hello")) for _ in range(2))
    with pytest.raises(OverloadedError, match="queue is full"):
        engine.submit(greedy("Hello"))
    engine.close()
    assert first.collect().finish_reason == second.collect().finish_reason == "cancelled"


def test_chat_is_rendered_with_the_training_template(
        engine: Engine, tiny_adapters: dict[str, Path]) -> None:
    from tuneforge.data.templates import select_template
    from tuneforge.train.generate import generation_prompt

    engine.load_adapter("alpaca", tiny_adapters["alpaca"])
    messages = (ChatMessage(role="system", content="Be brief."),
                ChatMessage(role="user", content="What is the capital of France?"))
    for adapter, template in ((None, None), ("alpaca", "alpaca")):
        request = GenerationRequest(messages=messages, adapter=adapter, temperature=0.0)
        expected = generation_prompt(select_template(engine.tokenizer, template),
                                     "What is the capital of France?", system="Be brief.")
        assert engine.render_prompt(request) == expected
    assert engine.render_prompt(GenerationRequest(messages=messages)).endswith(
        "<|im_start|>assistant\n")


def test_stream_deltas_join_to_the_whole_answer(engine: Engine) -> None:
    request = GenerationRequest(prompt="你好", max_tokens=20, temperature=1.0, seed=3)
    deltas = list(engine.submit(request))
    assert "".join(deltas) == engine.complete(request).text


def test_detokenizer_never_sends_half_a_character(tiny_tokenizer: Any) -> None:
    text = "龘 and 𝄞 are rare"  # unseen: byte-level BPE splits each into byte tokens
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())
    detokenizer = Detokenizer(tiny_tokenizer, stop=())
    deltas = [detokenizer.add(i)[0] for i in ids]
    assert "".join(deltas) + detokenizer.flush() == text
    assert all("\ufffd" not in d for d in deltas)


def test_detokenizer_holds_back_a_possible_stop_string(tiny_tokenizer: Any) -> None:
    ids = tiny_tokenizer("Paris is the capital", add_special_tokens=False)["input_ids"]
    detokenizer = Detokenizer(tiny_tokenizer, stop=("the cap",))
    sent, stopped = "", False
    for i in ids:
        delta, stopped = detokenizer.add(i)
        sent += delta
        assert "the" not in sent
        if stopped:
            break
    assert stopped and sent == "Paris is "


def test_async_iteration_yields_the_same_text(engine: Engine) -> None:
    import asyncio

    async def read() -> str:
        return "".join([d async for d in engine.submit(greedy(PROMPTS[3], max_tokens=10))])

    assert asyncio.run(read()) == engine.complete(greedy(PROMPTS[3], max_tokens=10)).text


def _logits_by_weights(tiny_llm_dir: Path, formats: tuple[str, ...]) -> dict[str, Any]:
    """The logits of one 5-token prompt with each weight format, checking on the way that
    each engine answers greedily the same twice."""
    import torch

    ids = torch.tensor([[5, 9, 13, 21, 34]])
    logits = {}
    for weights in formats:
        with Engine(str(tiny_llm_dir), Settings(), weights=weights) as engine:  # type: ignore[arg-type]
            assert engine.weights == weights
            with torch.inference_mode():
                logits[weights] = engine._model(ids).logits
            first = engine.complete(greedy(PROMPTS[0], max_tokens=12))
            assert engine.complete(greedy(PROMPTS[0], max_tokens=12)) == first
    return logits


def test_float16_weights_stay_close_to_float32(tiny_llm_dir: Path) -> None:
    import torch

    logits = _logits_by_weights(tiny_llm_dir, ("float32", "float16"))
    assert torch.allclose(logits["float16"], logits["float32"], atol=1e-2)
    assert not torch.equal(logits["float16"], logits["float32"])  # the fp16 path really ran


def test_bf16_weights_stay_close_to_float32_and_auto_picks_by_rows(tiny_llm_dir: Path) -> None:
    import torch
    import torch.nn.functional as F

    from tuneforge.models.hardware import cpu_has_amx, cpu_has_fast_bf16
    from tuneforge.serve.layers import Bf16Linear, ByRowsLinear, Fp16Linear

    if not cpu_has_fast_bf16():
        pytest.skip("this CPU has no native bf16 matmul: bfloat16 and auto use float16")
    bf16_formats = ("bfloat16", "auto") if cpu_has_amx() else ("bfloat16",)
    logits = _logits_by_weights(tiny_llm_dir, ("float32", *bf16_formats))
    scale = logits["float32"].abs().max()
    for weights in bf16_formats:  # 5 prompt rows: auto's bf16 side
        assert (logits[weights] - logits["float32"]).abs().max() < 2e-2 * scale
    assert not torch.equal(logits["bfloat16"], logits["float32"])  # bf16 really ran

    weight, bias = torch.randn(24, 16), torch.randn(24)
    bf16, half = Bf16Linear(weight, bias), Fp16Linear(weight, bias)
    x = torch.randn(8, 16)
    want = F.linear(x.bfloat16(), weight.bfloat16(), bias.bfloat16()).float()
    assert torch.equal(bf16(x), want) and bf16(x).dtype == torch.float32
    by_rows = torch.jit.script(ByRowsLinear(half, bf16))
    assert torch.equal(by_rows(x[:ByRowsLinear.ROWS - 1]), half(x[:ByRowsLinear.ROWS - 1]))
    assert torch.equal(by_rows(x[:ByRowsLinear.ROWS]), bf16(x[:ByRowsLinear.ROWS]))
    # transformers' [batch, tokens, hidden] input counts tokens as rows
    assert torch.equal(by_rows(x[None]), bf16(x[None]))


@pytest.mark.parametrize(("amx", "fast_bf16", "chosen"), [
    (True, True, "auto"), (False, True, "float16"), (True, False, "float16")])
def test_auto_weights_take_bf16_batches_only_where_the_cpu_has_amx(
        tiny_llm_dir: Path, monkeypatch: pytest.MonkeyPatch, amx: bool, fast_bf16: bool,
        chosen: str) -> None:
    from tuneforge.models import hardware

    monkeypatch.setattr(hardware, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: fast_bf16)
    with Engine(str(tiny_llm_dir), Settings(), weights="auto") as engine:
        assert engine.weights == chosen


def test_the_model_loads_and_steps_in_the_engine_thread(
        tiny_llm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread runs every parallel torch operation of the engine (OpenMP spins only while
    a process has no more OpenMP threads than cores); a load error reaches the caller."""
    from tuneforge.serve import engine as engine_module

    threads: set[str] = set()
    pack, step = engine_module._pack_linears, Engine._step

    def recording_pack(*args: Any) -> Any:
        threads.add(threading.current_thread().name)
        return pack(*args)

    def recording_step(self: Engine) -> None:
        threads.add(threading.current_thread().name)
        step(self)

    monkeypatch.setattr(engine_module, "_pack_linears", recording_pack)
    monkeypatch.setattr(Engine, "_step", recording_step)
    with Engine(str(tiny_llm_dir), Settings()) as engine:
        engine.complete(greedy(PROMPTS[0], max_tokens=3))
    assert threads == {"tuneforge-engine"}

    def broken(*args: Any) -> Any:
        raise OSError("weights unreadable")

    monkeypatch.setattr(engine_module, "_pack_linears", broken)

    def engine_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "tuneforge-engine"}

    before = engine_threads()  # other tests' engines may still be alive
    with pytest.raises(OSError, match="weights unreadable"):
        Engine(str(tiny_llm_dir), Settings())
    assert engine_threads() <= before  # the failed engine's thread ended


def test_prompts_prefilled_together_answer_as_alone(tiny_llm_dir: Path,
                                                    tiny_adapters: dict[str, Path]) -> None:
    engine = Engine(str(tiny_llm_dir), Settings(), max_batch=8)
    try:
        engine.load_adapter("first", tiny_adapters["first"])
        requests = [greedy(p, max_tokens=10, adapter="first" if i % 2 else None)
                    for i, p in enumerate(PROMPTS)]
        # submitted before the scheduler starts: they join in one left-padded prefill
        streams = [engine.submit(r) for r in requests]
        engine.start()
        together = [s.collect().text for s in streams]
        assert together == [engine.complete(r).text for r in requests]
    finally:
        engine.close()
