"""Plot the per-step losses of train_throughput.py runs against each other; writes one PNG.

    .venv/bin/python bench/plot_losses.py OUT.png LABEL=RUN.json [LABEL=RUN.json ...]

BENCHMARKS.md shows the float32 and the default (bf16 autocast where the CPU has it) runs
of the same 30 steps this way: the curves should lie on each other.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(sys.argv) < 3 or any("=" not in arg for arg in sys.argv[2:]):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    out = Path(sys.argv[1])
    fig, ax = plt.subplots(figsize=(7, 4))
    for arg in sys.argv[2:]:
        label, path = arg.split("=", 1)
        run = json.loads(Path(path).read_text())
        losses = run["losses"]
        ax.plot(range(1, len(losses) + 1), losses, marker="o", markersize=3,
                label=f"{label} ({run['tokens_per_s_steady']} tokens/s)")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("LoRA SFT of SmolLM2-135M, 30 steps (bench/train_throughput.py)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(out)  # a whole file or none
    print(out)


if __name__ == "__main__":
    main()
