"""Where a LoRA adapter named by a request or a command line lives (serving, and training
that continues an adapter)."""

from __future__ import annotations

from pathlib import Path

from tuneforge.errors import NotFoundError
from tuneforge.settings import Settings

ADAPTER_CONFIG = "adapter_config.json"


def adapter_dir(path: str | Path, settings: Settings) -> Path:
    """The PEFT adapter directory of an adapter directory, a run directory (its output/) or a
    run id under the runs folder.

    Raises:
        NotFoundError: none of these holds an adapter_config.json.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir() and (settings.runs / str(path)).is_dir():
        directory = settings.runs / str(path)
    if (directory / "output").is_dir():
        directory = directory / "output"
    if not (directory / ADAPTER_CONFIG).is_file():
        raise NotFoundError("adapter", str(path), hint=(
            f"expected a PEFT adapter directory (with {ADAPTER_CONFIG}), a run directory or "
            "a run id; a merged full model is served as a base model instead"))
    return directory.resolve()
