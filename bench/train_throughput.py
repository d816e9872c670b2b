"""Training throughput benchmark: LoRA SFT on the bundled SmolLM2-135M; prints one JSON object.

The issue's settings: the first 200 examples of LLaMA-Factory's alpaca_en_demo, cutoff 512,
batch 4, LoRA r=8 on q_proj,v_proj, 30 steps, and otherwise the defaults a user gets (pass
extra `--key value` flags to try others, e.g. `--packing false --bf16 true`). Reported:

- trained tokens/s (padding excluded) in steady state (steps after the first 5) and overall;
- median step time; the whole run's wall time (model load, data, any compilation included);
- peak RSS of the process;
- model-FLOP utilisation against the fp32 and bf16 matmul peaks measured in the same run
  (training FLOPs per token: 2N forward + 2N backward through activations for every weight,
  + 2N for the trainable ones, + attention's 12 * layers * hidden * context / 2);
- the loss of every step, so that runs with different precision can be compared.

    .venv/bin/python bench/train_throughput.py [--steps 30] [--data PATH] [--model M]
        [--key value ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PEER_DATA = REPO.parent / "shared" / "peer-data" / "llamafactory"
MODEL = "smollm2-135m-instruct"


def matmul_peak(dtype_name: str, size: int = 1024, seconds: float = 1.0) -> float:
    """GFLOP/s of a square matmul in `dtype_name` on this machine's torch threads."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or count < 2:
        a @ b
        count += 1
    return 2 * size**3 * count / elapsed / 1e9


def flops_per_token(model_dir: Path, trainable: int, context: float) -> float:
    """Training FLOPs per token of a LoRA run (see the module docstring)."""
    config = json.loads((model_dir / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    inter, vocab = config["intermediate_size"], config["vocab_size"]
    kv = hidden // config["num_attention_heads"] * config["num_key_value_heads"]
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter
    dense = layers * per_layer + hidden * vocab  # the lm_head counts; the embedding lookup not
    return 4 * dense + 6 * trainable + 12 * layers * hidden * context / 2


def _shown(path: Path) -> str:
    """`path` as the results show it: relative to the checkout's parent where it lies there."""
    try:
        return str(Path("..") / path.resolve().relative_to(REPO.parent))
    except ValueError:
        return path.name


def trainable_params(output: Path) -> int:
    """Parameters in the saved adapter: the ones that were trained."""
    from safetensors import safe_open

    with safe_open(str(output / "adapter_model.safetensors"), "pt") as fh:
        return sum(math.prod(fh.get_slice(key).get_shape()) for key in fh.keys())  # noqa: SIM118


def cpu_description() -> dict[str, Any]:
    """The CPU's model name and the bf16 instructions Linux reports for it (the results
    differ by these far more than by anything else)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    return {"cpu": name, "bf16": sorted(flags & {"avx512_bf16", "amx_bf16"})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30,
                        help="at least 7: the first 5 steps are warm-up, not steady state")
    parser.add_argument("--data", type=Path, default=PEER_DATA / "alpaca_en_demo.json")
    parser.add_argument("--model", default=MODEL, help="a prepared alias or a model directory")
    args, extra = parser.parse_known_args()
    if args.steps < 7:
        parser.error(f"--steps: expected at least 7, got {args.steps}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()

    from tuneforge.config import load_run_config
    from tuneforge.models import resolve_model
    from tuneforge.settings import Settings
    from tuneforge.train.run import train

    settings = Settings()
    model_dir = resolve_model(args.model, settings)  # prepared once; not part of the timed run
    records: list[dict[str, Any]] = []
    stamps: list[float] = []

    def progress(record: dict[str, Any]) -> None:
        if record.get("loss") is not None:
            records.append(record)
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        values = {
            "model_name_or_path": args.model, "dataset": str(args.data), "max_samples": 200,
            "cutoff_len": 512, "per_device_train_batch_size": 4, "finetuning_type": "lora",
            "lora_rank": 8, "lora_target": "q_proj,v_proj", "max_steps": args.steps,
            "logging_steps": 1, "save_steps": 10_000, "output_dir": out, "val_size": 0,
        }
        config = load_run_config(values=values, overrides=extra, source="bench")
        run_start = time.perf_counter()
        outcome = train(config, settings, progress=progress)
        run_seconds = time.perf_counter() - run_start
        trainable = trainable_params(outcome.paths.output)
    # after the run: the first bf16 product of a process fixes oneDNN's cache sizes, which
    # `train` sets (as for a user's run, in which nothing multiplies before it)
    peaks = {"fp32": matmul_peak("float32"), "bf16": matmul_peak("bfloat16")}

    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    tokens = [r["tokens"] for r in records]
    steady = slice(5, None)  # the first steps carry warm-up (and any compilation)
    steady_tokens = tokens[-1] - tokens[5]
    steady_seconds = stamps[-1] - stamps[5]
    tokens_per_s = steady_tokens / steady_seconds
    context = tokens[-1] / len(tokens) / config.training.per_device_train_batch_size
    flops = flops_per_token(model_dir, trainable, context) * tokens_per_s / 1e9
    result = {
        "benchmark": "train_throughput",
        "model": args.model,
        # paths relative to the checkout's parent (../shared/...), not this machine's
        "settings": {**values, "dataset": _shown(args.data), "output_dir": None,
                     "extra_flags": extra},
        "steps": len(records),
        "trained_tokens": tokens[-1],
        "tokens_per_s_steady": round(tokens_per_s, 1),
        "tokens_per_s_overall": round(tokens[-1] / (stamps[-1] - run_start), 1),
        "median_step_s": round(statistics.median(steps[steady]), 3),
        "run_seconds": round(run_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "model_gflops": round(flops, 1),
        "mfu": {k: round(flops / v, 3) for k, v in peaks.items()},
        "losses": [round(r["loss"], 4) for r in records],
        "machine": {**cpu_description(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
