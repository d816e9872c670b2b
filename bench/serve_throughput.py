"""Serving benchmark: `tuneforge serve` on the bundled SmolLM2-135M, driven from this (separate)
process by 1, 4 and 16 concurrent streaming chat clients; prints one JSON object.

The clients run on one asyncio event loop (as vLLM's benchmark_serving does); each keeps one
open connection (as the OpenAI SDK does) and asks for 128 new tokens
(`ignore_eos`, vLLM's extension, so every answer has exactly that many) at temperature 0 over
/v1/chat/completions with `stream: true`.
Reported per concurrency level: aggregate generated tokens/s (all tokens over the wall time
of the level), time to first token and inter-token latency (p50 and p99 over every client
and every gap between content chunks), each client's own tokens/s (median), and the CPU
time this load generator used (it shares the machine's cores with the server).

    .venv/bin/python bench/serve_throughput.py [--clients 1,4,16] [--tokens 128]
        [--model smollm2-135m-instruct] [-- extra `tuneforge serve` flags]
"""

from __future__ import annotations

import argparse
import asyncio
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


async def one_client(client: httpx.AsyncClient, model: str, prompt: str,
                     tokens: int) -> dict[str, Any]:
    """One streaming request on `client`'s open connection (as the OpenAI SDK reuses its
    connection pool), so the times are the server's, not a new TCP connection's."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    stamps: list[float] = []
    completion = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as answer:
        answer.raise_for_status()
        async for line in answer.aiter_lines():
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


async def level(url: str, model: str, clients: int, tokens: int) -> dict[str, Any]:
    """`clients` concurrent streams, each on its own connection, from one event loop (as
    vLLM's benchmark_serving drives a server): the load generator shares this machine's
    cores with the server, and a thread per client cost it several times the CPU."""
    connections = [httpx.AsyncClient(base_url=url, timeout=600) for _ in range(clients)]
    for connection in connections:
        await connection.get("/health")  # connected before the clock starts
    cpu, start = time.process_time(), time.perf_counter()
    results = await asyncio.gather(*(
        one_client(connections[i], model, PROMPTS[i % len(PROMPTS)], tokens)
        for i in range(clients)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    for connection in connections:
        await connection.aclose()
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
        "load_generator_cpu_s": round(cpu, 2),
    }


async def run_levels(url: str, model: str, clients: str, tokens: int
                     ) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await one_client(client, model, "Hello", 8)  # warm-up
    return [await level(url, model, int(n), tokens) for n in clients.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("serve_flags", nargs="*", help="after --: flags for tuneforge serve")
    args = parser.parse_args()
    process, url, startup = start_server(args.model, args.serve_flags)
    try:
        levels = asyncio.run(run_levels(url, args.model, args.clients, args.tokens))
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
