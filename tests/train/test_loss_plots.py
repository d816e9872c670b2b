"""training_loss.png / training_eval_loss.png: LLaMA-Factory's smoothing, only plots with data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tuneforge.train.plot import plot_losses, smooth


def test_smoothing_is_llamafactorys_moving_average() -> None:
    values = [4.0, 2.0, 3.0, 1.0]
    weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)  # LLaMA-Factory's weight
    expected, last = [], values[0]
    for value in values:
        last = last * weight + (1 - weight) * value
        expected.append(last)
    assert smooth(values) == pytest.approx(expected)
    assert smooth([5.0, 1.0], weight=0.5) == [5.0, 3.0]
    assert smooth([]) == []


def test_plots_only_what_the_log_holds_and_skips_a_torn_last_line(tmp_path: Path) -> None:
    from PIL import Image

    log = tmp_path / "trainer_log.jsonl"
    records = [{"current_steps": s, "loss": 3.0 - 0.1 * s, "eval_loss": None} for s in range(1, 9)]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"current_steps": 9, "lo')
    loss_png, eval_png = tmp_path / "training_loss.png", tmp_path / "training_eval_loss.png"
    assert plot_losses(log, loss_png, eval_png) == [loss_png]  # no eval loss: no eval plot
    assert not eval_png.exists() and not list(tmp_path.glob("*.tmp.png"))
    with Image.open(loss_png) as image:
        assert image.size == (700, 450)
    records.append({"current_steps": 8, "loss": None, "eval_loss": 2.5})
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert plot_losses(log, loss_png, eval_png) == [loss_png, eval_png]
