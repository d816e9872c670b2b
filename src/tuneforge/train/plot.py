"""training_loss.png and training_eval_loss.png from trainer_log.jsonl: raw and smoothed."""

from __future__ import annotations

import math
from pathlib import Path

from tuneforge.paths import read_json_lines


def read_log(path: Path) -> list[dict[str, float]]:
    """The records of a trainer_log.jsonl; a truncated last line is ignored."""
    return read_json_lines(path)[0]


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """An exponential moving average, weighted as LLaMA-Factory's plots are."""
    if not values:
        return []
    if weight is None:
        weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
    out, last = [], values[0]
    for value in values:
        last = last * weight + (1 - weight) * value
        out.append(last)
    return out


def plot_losses(log_file: Path, loss_png: Path, eval_png: Path) -> list[Path]:
    """Write the plots that have data; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    records = read_log(log_file)
    for key, target, title in (("loss", loss_png, "training loss"),
                               ("eval_loss", eval_png, "evaluation loss")):
        points = [(r["current_steps"], r[key]) for r in records if r.get(key) is not None]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
        ax.plot(steps, values, color="#1f77b4", alpha=0.4, label="original")
        ax.plot(steps, smooth(list(values)), color="#1f77b4", label="smoothed")
        ax.set(title=f"{title} of {log_file.parent.name}", xlabel="step", ylabel=key)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        tmp = target.with_suffix(".tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(target)
        written.append(target)
    return written
