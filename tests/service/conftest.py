"""A training service (`tuneforge serve`) in a work folder laid out as the REST-service seed's
users have it: data/train.json, config/models.yaml, models/checkpoints/."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_server import Server

SEED_DATA = [
    {"text": "用户：你好\n助手：你好！有什么可以帮助你的吗？"},
    {"text": "用户：介绍一下Python\n助手：Python是一种高级编程语言..."},
]
CHAT_DATA = [{"messages": [{"role": "user", "content": f"question {i}"},
                           {"role": "assistant", "content": f"answer {i}"}]}
             for i in range(8)]
MODELS_YAML = """lora_config:
  r: 4
  lora_alpha: 8
  target_modules:
    - "q_proj"
    - "k_proj"
    - "v_proj"
    - "o_proj"
  lora_dropout: 0.05
  bias: "none"
"""


def make_workdir(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "data" / "train.json").write_text(json.dumps(SEED_DATA, ensure_ascii=False),
                                              encoding="utf-8")
    (root / "data" / "chat.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in CHAT_DATA), encoding="utf-8")
    (root / "config" / "models.yaml").write_text(MODELS_YAML, encoding="utf-8")
    return root


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


def wait_for(server: Server, task_id: str, states: tuple[str, ...],
             timeout: float = 180) -> dict[str, Any]:
    """Poll /train/status until the job's state is one of `states`."""
    deadline = time.monotonic() + timeout
    while True:
        status = server.http.get(f"/train/status/{task_id}").json()
        if status["state"] in states:
            return status
        if time.monotonic() > deadline:
            log = server.http.get(f"/train/{task_id}/logs").text
            raise AssertionError(f"job {task_id} stayed {status['state']}: {status}\n{log}")
        time.sleep(0.2)
