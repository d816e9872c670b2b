"""The demo's second half: fine-tune all-MiniLM-L6-v2 on the shipped FAQ's training
questions (data/faq.py) and score it beside its base on the 200 held-out questions.

The settings are the ones measured in docs/lazyllm.md: two epochs at 1e-4, batches of 32,
one mined hard negative per question (train_group_size 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuneforge.config.eval import build_eval_config
from tuneforge.config.load import load_run_config
from tuneforge.config.run import RunConfig
from tuneforge.data.faq import write_faq
from tuneforge.eval.run import evaluate
from tuneforge.settings import Settings
from tuneforge.train.callback import Progress
from tuneforge.train.run import train

EMBED_MODEL = "minilm-l6-v2"
FAQ_SETTINGS: dict[str, Any] = {
    "stage": "embedding", "epochs": 2, "learning_rate": 1e-4, "warmup_ratio": 0.1,
    "per_device_train_batch_size": 32, "train_group_size": 2, "mine_hard_negatives": 1,
    "logging_steps": 2, "save_steps": 1000, "overwrite_output_dir": True}


def faq_config(folder: Path, model: str = EMBED_MODEL, overrides: Sequence[str] = ()
               ) -> RunConfig:
    """The FAQ fine-tune's RunConfig, its run folder under `folder`."""
    files = write_faq(folder)
    values = FAQ_SETTINGS | {"model_name_or_path": model, "dataset": [str(files.train)],
                             "output_dir": str(folder / "run")}
    return load_run_config(values=values, overrides=overrides, source="demo")


def run_faq_demo(settings: Settings, progress: Progress | None = None,
                 model: str = EMBED_MODEL, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Fine-tune on the FAQ under settings.home/demo/faq, then evaluate base and fine-tune on
    the held-out questions; the evaluation report (rows base and fine-tuned)."""
    folder = settings.home / "demo" / "faq"
    config = faq_config(folder, model, overrides)
    outcome = train(config, settings, progress)
    eval_config = load_run_config(values={"model_name_or_path": model,
                                          "dataset": [str(folder / "test.json")]},
                                  source="demo")
    options = build_eval_config({"adapter": str(outcome.paths.root), "compare_base": True})
    return evaluate(eval_config, options, settings)
