"""docs/sdk.md and docs/sdk_zh.md: every `python sdk` example (the Qianfan guide's, in
tuneforge form) runs, with a tiny model in place of SmolLM2 and a fresh TUNEFORGE_HOME."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```python sdk\n(.*?)^```", re.MULTILINE | re.DOTALL)
MODEL = "smollm2-135m-instruct"


def _code(body: str) -> str:
    """The example without comments and blank lines: the English and Chinese guides share
    their code, so each distinct example runs once."""
    lines = (re.sub(r"\s+#.*$", "", line).rstrip() for line in body.splitlines())
    return "\n".join(line for line in lines if line and not line.lstrip().startswith("#"))


def examples() -> list:
    seen: dict[str, str] = {}
    for doc in ("sdk.md", "sdk_zh.md"):
        path = REPO / "docs" / doc
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            seen.setdefault(_code(match[1]), f"{doc}:{line}")
    bodies = {v: k for k, v in seen.items()}
    return [pytest.param(bodies[name], id=name) for name in sorted(bodies, key=_order)]


def _order(name: str) -> tuple[str, int]:
    doc, line = name.split(":")
    return doc, int(line)


@pytest.mark.parametrize("code", examples())
def test_sdk_example_runs(code: str, tiny_llm_dir: Path, home: Path) -> None:
    assert MODEL in code or "Pipeline(" in code
    env = {**os.environ, "TUNEFORGE_HOME": str(home)}
    result = subprocess.run([sys.executable, "-c", code.replace(MODEL, str(tiny_llm_dir))],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
