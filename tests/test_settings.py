"""settings.py and paths.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.errors import UserError
from tuneforge.paths import atomic_write, safe_join
from tuneforge.settings import Settings


def test_home_comes_from_tuneforge_home(home: Path) -> None:
    settings = Settings()
    assert settings.home == home
    assert settings.runs == home / "runs"
    assert settings.models == home / "models"
    assert settings.registry_url == f"sqlite:///{home / 'registry.db'}"


def test_every_path_can_be_overridden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNEFORGE_RUNS_DIR", str(tmp_path / "r"))
    monkeypatch.setenv("TUNEFORGE_CACHE_DIR", str(tmp_path / "c"))
    settings = Settings(models_dir=tmp_path / "m")
    assert (settings.runs, settings.cache, settings.models) == (
        tmp_path / "r", tmp_path / "c", tmp_path / "m"
    )


def test_default_home_is_dot_tuneforge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNEFORGE_HOME")
    assert Settings().home == Path("~/.tuneforge").expanduser()


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "state.json"
    atomic_write(target, "{}")
    atomic_write(target, b"[]")
    assert target.read_bytes() == b"[]"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


@pytest.mark.parametrize("relative", ["../x.json", "/etc/passwd", "a/../../x"])
def test_safe_join_refuses_escapes(tmp_path: Path, relative: str) -> None:
    with pytest.raises(UserError, match="escapes"):
        safe_join(tmp_path, relative)


def test_safe_join_allows_inside(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a/b.json") == (tmp_path / "a" / "b.json").resolve()
