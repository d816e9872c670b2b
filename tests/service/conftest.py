"""A training service (`tuneforge serve`) in a work folder laid out as the REST-service seed's
users have it: data/train.json, config/models.yaml, models/checkpoints/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from live_server import Server, make_workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("service-work"))


@pytest.fixture(scope="module")
def service(tiny_llm_dir: Path, workdir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with the tiny model served as `tiny` (its folder is a root)."""
    home = tmp_path_factory.mktemp("service-home")
    server = Server([f"tiny={tiny_llm_dir}", "--root", str(tiny_llm_dir)], home, cwd=workdir)
    yield server
    server.stop()
