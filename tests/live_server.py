"""A real `tuneforge serve` process on a free 127.0.0.1 port, for the tests that drive the
HTTP faces (tests/ is on sys.path through its conftest.py: `from live_server import Server`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

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


