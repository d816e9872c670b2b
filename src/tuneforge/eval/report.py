"""The evaluation report: report.json (the whole result), report.md and report.png.

report.md holds one table (a row per model and, beside a base, the difference) and a sample
of side-by-side generations; report.png one bar chart per metric. Each file is written
atomically.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuneforge.paths import atomic_write

SAMPLES_SHOWN = 5  # side-by-side generations in report.md (report.json keeps more)


def write_report(result: Mapping[str, Any], directory: Path) -> list[Path]:
    """Write report.json, report.md and report.png into `directory`; returns their paths."""
    paths = [directory / "report.json", directory / "report.md", directory / "report.png"]
    data = {**result, "files": [str(p) for p in paths]}
    atomic_write(paths[0], json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    atomic_write(paths[1], report_markdown(result))
    atomic_write(paths[2], report_png(result))
    return paths


def report_markdown(result: Mapping[str, Any]) -> str:
    """The table of metrics per model (plus the difference) and a few generations."""
    names = _metric_names(result)
    adapter = f" + `{result['adapter']}`" if result.get("adapter") else ""
    lines = [
        "# Evaluation report", "",
        f"Model `{result['model']}`{adapter}; dataset {', '.join(result['dataset'])} "
        f"({result['kind']}, {result['samples']} samples).", "",
        "| model | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for row in result["rows"]:
        lines.append(f"| {row['name']} | "
                     + " | ".join(_number(row["metrics"].get(n)) for n in names) + " |")
    if result.get("difference"):
        diff = result["difference"]
        lines.append("| difference | "
                     + " | ".join(_number(diff.get(n), signed=True) for n in names) + " |")
    generations = result.get("generations") or []
    if generations:
        lines += ["", "## Sample generations", ""]
        for i, gen in enumerate(generations[:SAMPLES_SHOWN], start=1):
            lines.append(f"### {i}. {_one_line(gen['prompt'])}")
            lines.append("")
            lines += [f"- **{key}**: {_one_line(text)}" for key, text in gen.items()
                      if key != "prompt"]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def report_png(result: Mapping[str, Any]) -> bytes:
    """One bar chart per metric, a bar per model; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _metric_names(result)
    rows = result["rows"]
    fig, axes = plt.subplots(1, len(names), figsize=(2.4 * len(names) + 1, 3.6), dpi=100,
                             squeeze=False)
    # the base grey, the model being judged blue
    colors = ["#9e9e9e", "#1f77b4"] if len(rows) == 2 else ["#1f77b4"]
    for ax, name in zip(axes[0], names, strict=True):
        values = [row["metrics"].get(name, 0.0) for row in rows]
        bars = ax.bar([row["name"] for row in rows], values,
                      color=[colors[i % len(colors)] for i in range(len(rows))])
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_title(name)
        ax.set_ylim(bottom=min(0.0, *values), top=max(values) * 1.15 or 1.0)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"evaluation on {', '.join(result['dataset'])}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _metric_names(result: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for row in result["rows"]:
        names += [n for n in row["metrics"] if n not in names]
    return names


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(empty)"
