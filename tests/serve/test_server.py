"""`tuneforge serve` as a real process on a free 127.0.0.1 port, driven by the official openai
client and by plain HTTP as the REST-service seed's users call it."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from live_server import Server

pytestmark = pytest.mark.serial

@pytest.fixture(scope="module")
def encoder_dirs(tiny_embedder_dir: Path, tiny_cross_encoder_dir: Path,
                 tiny_reward_dir: Path) -> dict[str, Path]:
    return {"embedding": tiny_embedder_dir, "rerank": tiny_cross_encoder_dir,
            "reward": tiny_reward_dir}


@pytest.fixture(scope="module")
def server(tiny_llm_dir: Path, tiny_adapters: dict[str, Path], encoder_dirs: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("serve-home")
    served = Server([f"tiny={tiny_llm_dir}", "--adapter", f"first={tiny_adapters['first']}",
                     "--model", f"embed={encoder_dirs['embedding']}",
                     "--model", f"rerank={encoder_dirs['rerank']}",
                     "--model", f"reward={encoder_dirs['reward']}",
                     # the tests' models and adapters live in pytest's temporary folders
                     "--root", str(tmp_path_factory.getbasetemp())], home)
    yield served
    served.stop()


PROMPT = [{"role": "user", "content": "Say something about the sea."}]


def greedy_chat(server: Server, model: str = "tiny", **kwargs: Any) -> Any:
    return server.openai().chat.completions.create(
        model=model, messages=PROMPT, temperature=0, max_tokens=kwargs.pop("max_tokens", 12),
        **kwargs)


def test_models_and_health(server: Server) -> None:
    ids = [m.id for m in server.openai().models.list().data]
    assert {"tiny", "first", "embed", "rerank", "reward"} <= set(ids)
    health = server.http.get("/health").json()
    assert health["status"] == "ok" and "tiny" in health["models"]


def test_chat_greedy_is_deterministic_with_usage(server: Server) -> None:
    first, second = greedy_chat(server), greedy_chat(server)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].finish_reason in ("stop", "length")
    assert first.usage.prompt_tokens > 0
    assert 0 < first.usage.completion_tokens <= 12
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert first.model == "tiny" and first.id.startswith("chatcmpl-")


def test_chat_stream_joins_to_the_whole_answer(server: Server) -> None:
    whole = greedy_chat(server).choices[0].message.content
    chunks = list(server.openai().chat.completions.create(
        model="tiny", messages=PROMPT, temperature=0, max_tokens=12, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_completions_n_and_seed(server: Server) -> None:
    client = server.openai()
    plain = client.completions.create(model="tiny", prompt="The sea", max_tokens=8,
                                      temperature=0)
    assert plain.choices[0].text and plain.object == "text_completion"
    sampled = client.completions.create(model="tiny", prompt="The sea", max_tokens=8, n=3,
                                        temperature=1.0, seed=7)
    again = client.completions.create(model="tiny", prompt="The sea", max_tokens=8, n=3,
                                      temperature=1.0, seed=7)
    assert [c.index for c in sampled.choices] == [0, 1, 2]
    assert [c.text for c in sampled.choices] == [c.text for c in again.choices]
    assert sampled.usage.prompt_tokens == plain.usage.prompt_tokens  # the prompt counts once
    streamed = client.completions.create(model="tiny", prompt="The sea", max_tokens=8,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text


def test_stop_strings_end_the_answer(server: Server) -> None:
    client = server.openai()
    whole = client.completions.create(model="tiny", prompt="The sea", max_tokens=16,
                                      temperature=0).choices[0].text
    stop = whole[len(whole) // 2: len(whole) // 2 + 2]
    if not stop.strip():
        pytest.skip("the tiny model's answer has no usable stop string")
    cut = client.completions.create(model="tiny", prompt="The sea", max_tokens=16,
                                    temperature=0, stop=[stop])
    assert cut.choices[0].text == whole[: whole.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_two_adapters_answer_differently_in_the_same_batch(
        server: Server, tiny_adapters: dict[str, Path]) -> None:
    answer = server.http.post("/v1/load_lora_adapter", json={
        "lora_name": "second", "lora_path": str(tiny_adapters["alpaca"])})
    assert answer.status_code == 200, answer.text
    assert "second" in answer.text
    names = ["tiny", "first", "tiny:second", "first"]
    solo = {name: greedy_chat(server, name, max_tokens=10).choices[0].message.content
            for name in set(names)}
    with ThreadPoolExecutor(len(names)) as pool:
        together = list(pool.map(
            lambda name: greedy_chat(server, name, max_tokens=10).choices[0].message.content,
            names))
    assert together == [solo[name] for name in names]
    assert len({solo["tiny"], solo["first"], solo["tiny:second"]}) == 3
    gone = server.http.post("/v1/unload_lora_adapter", json={"lora_name": "second"})
    assert gone.status_code == 200, gone.text
    from openai import NotFoundError

    with pytest.raises(NotFoundError):
        greedy_chat(server, "second")


def test_a_run_id_is_served_on_its_base(server: Server, tiny_adapters: dict[str, Path]) -> None:
    import shutil

    shutil.copytree(tiny_adapters["first"], server.home / "runs" / "run-7" / "output")
    by_run = greedy_chat(server, "run-7").choices[0].message.content
    assert by_run == greedy_chat(server, "first").choices[0].message.content
    listed = server.http.get("/v1/models").json()["data"]
    assert {"id": "run-7", "parent": "tiny"}.items() <= next(
        row for row in listed if row["id"] == "run-7").items()


def test_embeddings_with_the_openai_client(server: Server) -> None:
    client = server.openai()
    default = client.embeddings.create(model="embed", input=["a cat", "a dog"])  # base64
    floats = client.embeddings.create(model="embed", input=["a cat", "a dog"],
                                      encoding_format="float")
    assert len(default.data) == 2 and default.usage.prompt_tokens > 0
    for one, two in zip(default.data, floats.data, strict=True):
        assert one.embedding == pytest.approx(two.embedding, abs=1e-6)
        assert sum(x * x for x in two.embedding) == pytest.approx(1.0, abs=1e-4)
    raw = server.http.post("/v1/embeddings", json={
        "model": "embed", "input": "a cat", "encoding_format": "base64"}).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert list(vector) == pytest.approx(floats.data[0].embedding, abs=1e-6)


def test_rerank_and_reward_scores(server: Server) -> None:
    docs = ["the sea is blue", "a cat sleeps", "waves in the sea"]
    answer = server.http.post("/v1/rerank", json={
        "model": "rerank", "query": "the sea", "documents": docs, "top_n": 2})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 2
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert results[0]["document"]["text"] == docs[results[0]["index"]]
    scored = server.http.post("/v1/score/evaluation", json={
        "model": "reward", "messages": ["hello there", "goodbye"]})
    assert scored.status_code == 200, scored.text
    body = scored.json()
    assert body["object"] == "score.evaluation" and len(body["scores"]) == 2
    cut = server.http.post("/v1/score/evaluation", json={
        "model": "reward", "messages": ["hello there", "goodbye"], "max_length": 1}).json()
    assert cut["scores"][0] != body["scores"][0]
    wrong = server.http.post("/v1/embeddings", json={"model": "tiny", "input": "x"})
    assert wrong.status_code == 400 and "generate" in wrong.json()["error"]["message"]


def test_the_rest_seed_examples(server: Server, tiny_llm_dir: Path,
                                tiny_adapters: dict[str, Path]) -> None:
    import requests

    # as ../shared/seeds/gpt-service-training-guide.zh.md calls them, paths made local
    response = requests.post(
        f"{server.url}/models/load",
        json={
            "model_name": "my-fine-tuned-model",
            "model_path": str(tiny_llm_dir),
            "lora_adapter": str(tiny_adapters["first"]),
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    response = requests.post(
        f"{server.url}/generate",
        json={
            "prompt": "用户：你好\n助手：",
            "model_name": "my-fine-tuned-model",
            "max_tokens": 512,
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["text"], str)
    greedy = {"prompt": "Hello", "model_name": "my-fine-tuned-model", "max_tokens": 8,
              "temperature": 0}
    assert requests.post(f"{server.url}/generate", json=greedy, timeout=60).json()["text"] == \
        server.openai().completions.create(model="first", prompt="Hello", max_tokens=8,
                                           temperature=0).choices[0].text


@pytest.mark.parametrize(("path", "body", "status", "field"), [
    ("/v1/chat/completions", {"model": "nope", "messages": PROMPT}, 404, None),
    ("/v1/chat/completions", {"model": "tiny", "messages": PROMPT, "temperature": 5}, 422,
     "temperature"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "bot", "content": "x"}]},
     422, "messages.0.role"),
    ("/v1/chat/completions", {"model": "tiny", "messages": []}, 422, "messages"),
    ("/v1/chat/completions", {"model": "tiny", "messages": PROMPT, "logprobs": True}, 422,
     "logprobs"),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 0}, 422, "max_tokens"),
    ("/v1/embeddings", {"model": "embed", "input": [[1, 2]]}, 422, "input"),
    ("/v1/rerank", {"model": "rerank", "query": "x", "documents": []}, 422, "documents"),
    ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "does/not/exist"}, 404, None),
    ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/does/not/exist"}, 403,
     "lora_path"),
    ("/v1/unload_lora_adapter", {"lora_name": "never-loaded"}, 404, None),
    ("/generate", {"model_name": "tiny"}, 422, "prompt"),
    ("/models/load", {"model_name": "x", "model_path": "Qwen/Qwen2-7B-Instruct"}, 404, None),
])
def test_client_mistakes_get_clear_4xx(server: Server, path: str, body: dict[str, Any],
                                       status: int, field: str | None) -> None:
    answer = server.http.post(path, json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["message"]
    if field is not None:
        assert error["param"] == field and field in error["message"]


def test_malformed_json_is_422(server: Server) -> None:
    answer = server.http.post("/v1/chat/completions", content=b"{not json",
                              headers={"content-type": "application/json"})
    assert answer.status_code == 422


def test_cancelled_stream_stops_generation(server: Server) -> None:
    body = {"model": "tiny", "messages": PROMPT, "max_tokens": 400, "temperature": 1.0,
            "seed": 0, "stream": True, "ignore_eos": True}
    before = _generated(server)
    with server.http.stream("POST", "/v1/chat/completions", json=body) as answer:
        lines = answer.iter_lines()
        for _ in range(3):
            next(lines)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if re.search(r'tuneforge_running_requests\{model="tiny"\} 0\.0',
                     server.http.get("/metrics").text) and _generated(server) > before:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the cancelled request kept running")
    assert 0 < _generated(server) - before < 400  # it stopped early, and was counted
    assert greedy_chat(server, max_tokens=2).choices[0].message.content is not None


def _generated(server: Server) -> float:
    found = re.search(r'tuneforge_generation_tokens_total\{model="tiny"\} (\S+)',
                      server.http.get("/metrics").text)
    return float(found.group(1)) if found else 0.0


def test_ignore_eos_and_the_context_limit(server: Server) -> None:
    client = server.openai()
    full = client.completions.create(model="tiny", prompt="The", max_tokens=40, temperature=0,
                                     extra_body={"ignore_eos": True})
    assert full.usage.completion_tokens == 40 and full.choices[0].finish_reason == "length"
    capped = client.completions.create(model="tiny", prompt="The", max_tokens=5000,
                                       temperature=0, extra_body={"ignore_eos": True})
    assert capped.usage.total_tokens <= 512 and capped.choices[0].finish_reason == "length"
    answer = server.http.post("/v1/completions", json={
        "model": "tiny", "prompt": "the sea " * 400, "max_tokens": 4})
    assert answer.status_code == 422 and answer.json()["error"]["param"] == "prompt"
    assert "context of 512 tokens" in answer.json()["error"]["message"]


def test_metrics_are_prometheus_text(server: Server) -> None:
    greedy_chat(server, max_tokens=3)
    text = server.http.get("/metrics").text
    for name in ("tuneforge_requests_total", "tuneforge_generation_tokens_total",
                 "tuneforge_queue_depth", "tuneforge_request_latency_seconds_bucket",
                 "tuneforge_time_to_first_token_seconds"):
        assert name in text
    assert re.search(r'tuneforge_requests_total\{route="/v1/chat/completions",status="200"\} '
                     r"[1-9]", text)


def test_tools_reach_the_prompt(server: Server) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    plain = greedy_chat(server, max_tokens=2)
    with_tools = greedy_chat(server, max_tokens=2, tools=tools)
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 10


@pytest.fixture(scope="module")
def small_server(tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("small-home")
    served = Server([str(tiny_llm_dir), "--max-batch", "1", "--max-queue", "1",
                     "--api-key", "secret"], home)
    yield served
    served.stop()


def test_full_queue_answers_503_with_retry_after(small_server: Server) -> None:
    name = small_server.http.get("/health").json()["models"][0]
    body = {"model": name, "prompt": "The", "max_tokens": 400, "temperature": 1.0, "seed": 1}
    headers = {"Authorization": "Bearer secret"}

    def post(_: int) -> httpx.Response:
        return small_server.http.post("/v1/completions", json=body, headers=headers)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(post, range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert 200 in statuses and 503 in statuses, statuses
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.headers["retry-after"] == "1"
    assert "queue" in busy.json()["error"]["message"]


def test_api_key_is_required_when_set(small_server: Server) -> None:
    from openai import AuthenticationError

    with pytest.raises(AuthenticationError):
        small_server.openai(api_key="wrong").models.list()
    assert small_server.openai(api_key="secret").models.list().data
    odd = small_server.http.get("/v1/models", headers={"Authorization": b"Bearer s\xe9cret"})
    assert odd.status_code == 401
    assert small_server.http.get("/health").status_code == 200  # no key for health checks


def test_json_lines_are_sse(server: Server) -> None:
    body = {"model": "tiny", "prompt": "The", "max_tokens": 3, "temperature": 0, "stream": True}
    with server.http.stream("POST", "/v1/completions", json=body) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = [line for line in answer.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in events)
    json.loads(events[0].removeprefix("data: "))


def test_terminal_chat_keeps_the_conversation(tiny_llm_dir: Path,
                                              tiny_adapters: dict[str, Path]) -> None:
    from tuneforge.cli.render import chat_loop
    from tuneforge.serve.chat import ChatSession
    from tuneforge.serve.engine import Engine
    from tuneforge.settings import Settings

    lines = iter(["Hello", "How are you?", "clear", "Hi", "exit"])
    with Engine(str(tiny_llm_dir), Settings(), max_batch=1) as engine:
        engine.load_adapter("adapter", tiny_adapters["first"])
        session = ChatSession(engine, adapter="adapter", max_tokens=4, temperature=0.0)
        seen: list[int] = []

        def read(prompt: str) -> str:
            seen.append(len(session.history))
            return next(lines)

        chat_loop(session, read)
    assert seen == [0, 2, 4, 0, 2]  # two turns kept per exchange; `clear` forgot them


def test_chat_command_answers_and_exits(tiny_llm_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge", "chat", str(tiny_llm_dir), "--max-tokens", "3",
         "--temperature", "0"], input="Hello\nexit\n", capture_output=True, text=True,
        timeout=120, env=dict(os.environ, TUNEFORGE_HOME=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "assistant: " in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "tuneforge", "chat", str(tmp_path / "nothing")],
        input="", capture_output=True, text=True, timeout=120,
        env=dict(os.environ, TUNEFORGE_HOME=str(tmp_path)))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
    assert len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["/does/not/exist"], ["--weights", "float8"],
                                  ["--port", "70000"]])
def test_serve_user_errors_are_one_line_exit_2(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "tuneforge", "serve", *args],
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, TUNEFORGE_HOME=str(tmp_path)))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_streamed_chat_with_n_interleaves_and_finishes_each_answer(server: Server) -> None:
    kwargs = dict(model="tiny", messages=PROMPT, max_tokens=6, temperature=1.0, seed=3, n=2)
    whole = server.openai().chat.completions.create(**kwargs)
    chunks = list(server.openai().chat.completions.create(stream=True, **kwargs))
    texts = {0: "", 1: ""}
    finished = set()
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.add(choice.index)
    assert finished == {0, 1}
    assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]


def test_a_broken_adapter_config_is_a_clear_422(server: Server, tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{not json")
    answer = server.http.post("/v1/load_lora_adapter", json={
        "lora_name": "broken", "lora_path": str(tmp_path)})
    assert answer.status_code == 422, answer.text
    assert "adapter_config.json" in answer.json()["error"]["message"]
