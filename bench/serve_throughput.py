"""Serving benchmark: `tuneforge serve` on the bundled SmolLM2-135M, driven from this (separate)
process by 1, 4 and 16 concurrent streaming chat clients; prints one JSON object.

Each client keeps one open connection (as the OpenAI SDK does) and asks for 128 new tokens
(`ignore_eos`, vLLM's extension, so every answer has exactly that many) at temperature 0 over
/v1/chat/completions with `stream: true`.
Reported per concurrency level: aggregate generated tokens/s (all tokens over the wall time
of the level), time to first token and inter-token latency (p50 and p99 over every client
and every gap between content chunks), and each client's own tokens/s (median).

    .venv/bin/python bench/serve_throughput.py [--clients 1,4,16] [--tokens 128]
        [--model smollm2-135m-instruct] [-- extra `tuneforge serve` flags]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

PROMPTS = [
    "Tell me a long story about a lighthouse keeper.",
    "Explain how a bicycle works, in detail.",
    "Write a letter to a friend about your garden.",
    "Describe a walk through a busy market.",
]


def start_server(model: str, extra: list[str]) -> tuple[subprocess.Popen[str], str, float]:
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "serve", model, "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert process.stdout is not None
    for line in process.stdout:
        if found := re.search(r"serving on (http://\S+)", line):
            threading.Thread(target=lambda: [None for _ in process.stdout],  # type: ignore
                             daemon=True).start()
            return process, found.group(1), time.perf_counter() - start
    raise SystemExit("tuneforge serve did not start")


def one_client(url: str, model: str, prompt: str, tokens: int,
               client: httpx.Client | None = None) -> dict[str, Any]:
    """One streaming request on `client`'s open connection (as the OpenAI SDK reuses its
    connection pool), so the times are the server's, not a new TCP connection's."""
    if client is None:
        with httpx.Client(base_url=url, timeout=600) as own:
            own.get("/health")
            return one_client(url, model, prompt, tokens, own)
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    stamps: list[float] = []
    completion = 0
    with client.stream("POST", "/v1/chat/completions", json=body) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                completion = chunk["usage"]["completion_tokens"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
    end = time.perf_counter()
    return {"ttft": stamps[0] - start, "gaps": [b - a for a, b in itertools.pairwise(stamps)],
            "tokens": completion, "seconds": end - start,
            "tokens_per_s": completion / (end - stamps[0]) if len(stamps) > 1 else 0.0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def level(url: str, model: str, clients: int, tokens: int) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    connections = [httpx.Client(base_url=url, timeout=600) for _ in range(clients)]
    for connection in connections:
        connection.get("/health")  # connected before the clock starts
    threads = [threading.Thread(target=lambda i=i: results.append(
        one_client(url, model, PROMPTS[i % len(PROMPTS)], tokens, connections[i])))
        for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    for connection in connections:
        connection.close()
    ttfts = [r["ttft"] for r in results]
    gaps = [g for r in results for g in r["gaps"]]
    return {
        "clients": clients, "tokens_per_client": tokens, "wall_s": round(wall, 3),
        "aggregate_tokens_per_s": round(sum(r["tokens"] for r in results) / wall, 1),
        "per_client_tokens_per_s_p50": round(
            statistics.median(r["tokens_per_s"] for r in results), 1),
        "ttft_s_p50": round(percentile(ttfts, 0.5), 3),
        "ttft_s_p99": round(percentile(ttfts, 0.99), 3),
        "itl_s_p50": round(percentile(gaps, 0.5), 4),
        "itl_s_p99": round(percentile(gaps, 0.99), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("serve_flags", nargs="*", help="after --: flags for tuneforge serve")
    args = parser.parse_args()
    process, url, startup = start_server(args.model, args.serve_flags)
    try:
        one_client(url, args.model, "Hello", 8)  # warm-up
        levels = [level(url, args.model, int(n), args.tokens) for n in args.clients.split(",")]
    finally:
        process.terminate()
        process.wait(timeout=60)
    print(json.dumps({
        "benchmark": "serve_throughput", "model": args.model, "server_startup_s":
        round(startup, 2), "levels": levels,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or
                    platform.machine(), "python": platform.python_version()},
    }, indent=2))


if __name__ == "__main__":
    main()
