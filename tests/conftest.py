"""Shared fixtures. Every test gets a fresh TUNEFORGE_HOME; nothing reaches a network."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"

REPO = Path(__file__).resolve().parent.parent
PEER_DATA = REPO.parent / "shared" / "peer-data" / "llamafactory"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TUNEFORGE_HOME under tmp_path, so no test touches ~/.tuneforge."""
    path = tmp_path / "home"
    monkeypatch.setenv("TUNEFORGE_HOME", str(path))
    return path


@pytest.fixture
def peer_data() -> Path:
    """LLaMA-Factory's demo data in ../shared/peer-data; skipped when ../shared is absent."""
    if not (PEER_DATA / "dataset_info.json").is_file():
        pytest.skip("../shared/peer-data/llamafactory is absent")
    return PEER_DATA


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a data file under tmp_path/data: text as is, anything else as JSON."""

    def _write(name: str, content: Any, *, raw: bytes | None = None) -> Path:
        path = tmp_path / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            path.write_bytes(raw)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(json.dumps(content, ensure_ascii=False, indent=2), encoding="utf-8")
        return path

    return _write
