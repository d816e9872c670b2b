"""bench/train_throughput.py runs end to end (on the tiny model) and reports what BENCHMARKS.md
records; its numbers are never asserted, only that they are there and consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "train_throughput.py"


ROWS = [{"instruction": f"Add {i} and {i}.", "input": "", "output": f"{i} + {i} = {2 * i}."}
        for i in range(40)]


def bench(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TUNEFORGE_HOME": str(home)})


def test_train_bench_reports_speed_memory_utilisation_and_losses(
        tiny_llm_dir: Path, home: Path, write) -> None:
    data = write("alpaca.json", ROWS)
    result = bench("--model", str(tiny_llm_dir), "--steps", "7", "--data", str(data),
                   "--lora_target", "q_proj", home=home)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["steps"] == 7 and len(report["losses"]) == 7
    assert report["settings"]["lora_target"] == "q_proj,v_proj"  # the settings...
    assert report["settings"]["extra_flags"] == ["--lora_target", "q_proj"]  # ...and the override
    assert report["trained_tokens"] > 0 and report["tokens_per_s_steady"] > 0
    assert report["median_step_s"] > 0 and 0 < report["run_seconds"] <= report["total_seconds"]
    assert report["peak_rss_gib"] > 0
    assert set(report["matmul_peak_gflops"]) == set(report["mfu"]) == {"fp32", "bf16"}
    for kind, peak in report["matmul_peak_gflops"].items():
        assert report["mfu"][kind] == round(report["model_gflops"] / peak, 3)
    assert report["machine"]["cpu"] and report["machine"]["cores"] == os.cpu_count()
    assert set(report["machine"]["bf16"]) <= {"avx512_bf16", "amx_bf16"}


def test_train_bench_needs_steps_past_the_warm_up(home: Path) -> None:
    result = bench("--steps", "6", home=home)
    assert result.returncode == 2
    assert "--steps: expected at least 7, got 6" in result.stderr
