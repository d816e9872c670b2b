"""A real `tuneforge serve` process on a free 127.0.0.1 port, for the tests that drive the
HTTP faces (tests/ is on sys.path through its conftest.py: `from live_server import Server`),
and the work folder of the REST-service seed's users (`make_workdir`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

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

SERVER_STARTUP_S = 120


class Server:
    """A `tuneforge serve` process (in `cwd`, default the current folder); its URL is read
    from its first line."""

    def __init__(self, args: list[str], home: Path, *, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        environment = dict(os.environ, TUNEFORGE_HOME=str(home), HF_HUB_OFFLINE="1",
                           TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1") | (env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tuneforge", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
            cwd=cwd)
        self.home = home
        self.lines: list[str] = []
        self.url = self._wait_for_url()
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def _wait_for_url(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + SERVER_STARTUP_S
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if found := re.search(r"serving on (http://\S+)", line):
                # keep draining the output so the process never blocks on a full pipe
                threading.Thread(target=self._drain, daemon=True).start()
                return found.group(1)
        self.stop()
        raise AssertionError("tuneforge serve did not start:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def openai(self, **kwargs: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=kwargs.pop("api_key", "none"),
                      max_retries=0, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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
