"""Process-wide settings read from the environment (`TUNEFORGE_*`), never at import time.

Faces build one `Settings()` and pass it down; the core never reads environment variables.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path("~/.tuneforge").expanduser()


class Settings(BaseSettings):
    """Where tuneforge keeps its registry, runs, models and caches."""

    model_config = SettingsConfigDict(env_prefix="TUNEFORGE_", extra="ignore", frozen=True)

    home: Path = Field(default_factory=_default_home, description="Root of all state.")
    db_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the registry; default SQLite in home."
    )
    runs_dir: Path | None = Field(default=None, description="Run directories; default home/runs.")
    models_dir: Path | None = Field(
        default=None, description="Prepared models; default home/models."
    )
    datasets_dir: Path | None = Field(
        default=None, description="Uploaded and registered datasets; default home/datasets."
    )
    cache_dir: Path | None = Field(
        default=None, description="Tokenised-data cache; default home/cache."
    )

    @property
    def runs(self) -> Path:
        return self.runs_dir or self.home / "runs"

    @property
    def models(self) -> Path:
        return self.models_dir or self.home / "models"

    @property
    def datasets(self) -> Path:
        return self.datasets_dir or self.home / "datasets"

    @property
    def cache(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def registry_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'registry.db'}"
