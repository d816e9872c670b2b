"""The docs are part of the work: generated references are current, examples run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.cli.docs import command_paths
from tuneforge.config.run import SECTIONS

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted([REPO / "README.md", REPO / "README_zh.md", *(REPO / "docs").glob("*.md")])
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples() -> list:
    params, seen = [], set()
    for doc in DOCS:
        for match in FENCE.finditer(doc.read_text(encoding="utf-8")):
            language, tags, body = match[1], match[2].split(), match[3]
            if language not in ("bash", "python") or "no-run" in tags or "sdk" in tags:
                continue  # sdk: run on a tiny model by tests/trainer/test_sdk_docs.py
            if body in seen:  # a translated guide repeats its examples: run each once
                continue
            seen.add(body)
            line = doc.read_text(encoding="utf-8").count("\n", 0, match.start()) + 1
            marks = [pytest.mark.slow] if "slow" in tags else []
            params.append(pytest.param(language, body, id=f"{doc.name}:{line}", marks=marks))
    return params


@pytest.mark.parametrize(("language", "body"), examples())
def test_doc_example_runs(language: str, body: str, home: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "TUNEFORGE_HOME": str(home)}
    command = [sys.executable, "-c", body] if language == "python" else ["bash", "-ec", body]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_config_field_is_documented() -> None:
    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    missing = [f"{s}.{n}" for s, m in SECTIONS.items() for n in m.model_fields
               if f"| `{n}` |" not in text]
    assert missing == []


def test_every_cli_command_is_documented() -> None:
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = [" ".join(p) for p in command_paths() if f"`tuneforge {' '.join(p)}`".replace(
        "tuneforge `", "tuneforge`") not in text and p]
    assert missing == []


def test_generated_references_are_current() -> None:
    cog = Path(sys.executable).parent / "cog"
    result = subprocess.run([str(cog), "--check", "docs/cli.md", "docs/config.md"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr + "\nrun `make docs`"
