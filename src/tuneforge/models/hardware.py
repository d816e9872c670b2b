"""What this CPU multiplies fast: shared by training (bf16 autocast) and serving (bf16 weights)."""

from __future__ import annotations

from functools import cache

FAST_BF16 = 1.2  # bf16 counts as fast where its matmul is this much faster than float32's


@cache
def cpu_bf16_speedup() -> float:
    """float32 matmul time / bfloat16 matmul time on this CPU (above 1: bf16 is faster).

    0 where oneDNN has no native bf16 kernels for this CPU (torch then emulates bf16, two
    orders of magnitude slower). Otherwise measured: what the silicon offers (avx512_bf16,
    amx_bf16) says little about what a 512 x 512 matmul gets. Costs a few milliseconds.
    """
    import time

    import torch

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return 0.0

    def seconds(dtype: torch.dtype) -> float:
        a = torch.randn(512, 512).to(dtype)
        a @ a
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - start)
        return best

    return seconds(torch.float32) / max(seconds(torch.bfloat16), 1e-9)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively and faster than float32 (AMX, AVX512-BF16)."""
    return cpu_bf16_speedup() >= FAST_BF16


@cache
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles for bf16 (Intel Sapphire Rapids and later), as Linux
    reports them; False where that cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return any(line.startswith("flags") and " amx_bf16" in line for line in fh)
    except OSError:
        return False
