"""The demo: teach SmolLM2-135M-Instruct a new identity with LoRA, and measure that it took.

`make demo` runs this on the embedded defaults: the bundled model, the identity dataset the
project ships (resources/demo/forge_identity.json, about 100 English and Chinese samples)
and its held-out questions (forge_identity_heldout.json, phrased unlike any training
question). It answers the held-out questions greedily before and after training and counts
an answer as "with the new identity" when it names Forge.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config.load import load_run_config
from tuneforge.config.run import RunConfig
from tuneforge.data.summary import demo_dataset_dir
from tuneforge.errors import StateError
from tuneforge.settings import Settings
from tuneforge.train.callback import Progress
from tuneforge.train.run import RunOutcome, train

DEMO_MODEL = "smollm2-135m-instruct"
HELDOUT_FILE = "forge_identity_heldout.json"
DEMO_SETTINGS = {
    "dataset": "forge_identity", "finetuning_type": "lora", "lora_target": "all",
    "lora_rank": 16, "lora_alpha": 32, "learning_rate": 1e-3, "num_train_epochs": 4,
    "per_device_train_batch_size": 8, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
    "cutoff_len": 256, "logging_steps": 2, "save_steps": 1000, "plot_loss": True,
    "val_size": 0, "seed": 42,
}


@dataclass(frozen=True)
class DemoAnswer:
    """One held-out question, answered before and after training."""

    question: str
    expect: str
    before: str
    after: str

    @property
    def before_ok(self) -> bool:
        return self.expect.lower() in self.before.lower()

    @property
    def after_ok(self) -> bool:
        return self.expect.lower() in self.after.lower()


@dataclass(frozen=True)
class DemoResult:
    """The training run, the answers side by side, and the loss plot."""

    outcome: RunOutcome
    answers: list[DemoAnswer]
    loss_plot: Path | None

    @property
    def share_before(self) -> float:
        return sum(a.before_ok for a in self.answers) / len(self.answers)

    @property
    def share_after(self) -> float:
        return sum(a.after_ok for a in self.answers) / len(self.answers)


def demo_config(model: str = DEMO_MODEL, overrides: Sequence[str] = ()) -> RunConfig:
    """The demo's RunConfig; `overrides` are --key value flags, as for `tuneforge train`."""
    values = {"model_name_or_path": model, "dataset_dir": str(demo_dataset_dir()),
              **DEMO_SETTINGS}
    return load_run_config(values=values, overrides=overrides, source="demo")


def heldout_questions() -> list[dict[str, str]]:
    """The held-out questions and the word a new-identity answer contains."""
    path = demo_dataset_dir() / HELDOUT_FILE
    return list(json.loads(path.read_text(encoding="utf-8")))


def run_demo(settings: Settings, config: RunConfig, progress: Progress | None = None,
             on_stage: Callable[[str], None] | None = None) -> DemoResult:
    """Answer the held-out questions, train, answer them again; copy the plot to loss.png."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from tuneforge.data.templates import select_template
    from tuneforge.data.tokenizer import load_tokenizer
    from tuneforge.models.sources import resolve_model
    from tuneforge.train.generate import generation_prompt, greedy_answers

    hf_logging.disable_progress_bar()  # the stages and the training bar say what happens
    say = on_stage or (lambda _: None)
    say(f"preparing {config.model.name_or_path}")
    model_dir = resolve_model(config.model.name_or_path or "", settings)
    tokenizer = load_tokenizer(config.model.tokenizer or str(model_dir), settings.cache)
    renderer = select_template(tokenizer, config.model.template)
    questions = heldout_questions()
    prompts = [generation_prompt(renderer, q["question"], config.model.default_system)
               for q in questions]
    say("answering the held-out questions before training")
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    before = greedy_answers(base, tokenizer, prompts)
    say("training")
    outcome = train(config, settings, progress=progress)
    if outcome.result.output_dir is None:
        raise StateError(f"{outcome.paths.root}: expected a completed demo run, got "
                         f"{outcome.result.status}", hint="run the demo again")
    say("answering the held-out questions after training")
    tuned = PeftModel.from_pretrained(base, str(outcome.result.output_dir))
    after = greedy_answers(tuned, tokenizer, prompts)
    plot = None
    if outcome.plots:
        plot = outcome.paths.root / "loss.png"
        shutil.copyfile(outcome.plots[0], plot)
    answers = [DemoAnswer(q["question"], q["expect"], b, a)
               for q, b, a in zip(questions, before, after, strict=True)]
    return DemoResult(outcome, answers, plot)
