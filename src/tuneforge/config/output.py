"""OutputConfig: where a run writes and what it reports."""

from __future__ import annotations

from pydantic import Field, field_validator

from tuneforge.config._base import Section, split_commas


class OutputConfig(Section):
    """The run's output directory, plots and reporting."""

    output_dir: str | None = Field(
        default=None, description="Where the result is written; default a folder of the run."
    )
    overwrite_output_dir: bool = Field(
        default=False, description="Start afresh even if output_dir holds checkpoints."
    )
    run_name: str | None = Field(default=None, description="A human name for the run.")
    plot_loss: bool = Field(
        default=False, description="Write training_loss.png (and the eval curve)."
    )
    report_to: list[str] = Field(
        default_factory=list,
        description="Extra metric sinks (transformers' integrations): tensorboard, wandb, mlflow.",
    )

    _split = field_validator("report_to", mode="before")(split_commas)
