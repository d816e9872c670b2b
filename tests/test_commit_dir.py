"""commit_dir: a temporary directory renamed onto its final name, and two writers of a
content-addressed cache entry racing for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuneforge import paths
from tuneforge.paths import atomic_dir, commit_dir


def _written(path: Path, text: str) -> Path:
    tmp = atomic_dir(path)
    (tmp / "data.txt").write_text(text)
    return tmp


def test_a_commit_replaces_what_is_there(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    commit_dir(_written(target, "first"), target)
    commit_dir(_written(target, "second"), target)
    assert (target / "data.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # no temporary left


def test_a_cache_entry_committed_first_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    commit_dir(_written(target, "first"), target, keep=Path.is_dir)
    commit_dir(_written(target, "second"), target, keep=Path.is_dir)
    assert (target / "data.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_a_broken_cache_entry_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    commit_dir(_written(target, "first"), target)
    (target / "data.txt").unlink()  # what `keep` looks for is gone
    commit_dir(_written(target, "second"), target,
               keep=lambda entry: (entry / "data.txt").is_file())
    assert (target / "data.txt").read_text() == "second"


def test_a_writer_that_commits_during_the_rename_wins_the_race(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the other writer's commit lands between our check and our rename: the kernel's rename
    # then fails (the target is a non-empty directory); a cache keeps the other entry
    target = tmp_path / "entry"
    other = _written(target, "other")
    rename = os.replace

    def racing(source: Path, destination: Path) -> None:
        if Path(source) != other:
            rename(other, destination)
        rename(source, destination)

    monkeypatch.setattr(paths.os, "replace", racing)
    commit_dir(_written(target, "mine"), target, keep=Path.is_dir)
    assert (target / "data.txt").read_text() == "other"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]

    # where replacing is asked for, losing the race is an error, not a silent keep
    other = _written(target, "other again")
    with pytest.raises(OSError):
        commit_dir(_written(target, "mine again"), target)
