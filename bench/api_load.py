"""Training-service API under load: with one job training, 50 concurrent clients drive
GET /train/status/{id} and GET /train/history from a separate process; prints one JSON object.

The script starts `tuneforge serve` (its own TUNEFORGE_HOME in a temporary folder, a work
folder holding a generated chat dataset, the training base served as its model), submits
one LoRA SFT job (`max_steps` large, one log record per step) and waits until it has logged
a few steps. Then:

1. quiet: the job's trained tokens/s over a window of `--seconds` with no API traffic;
2. loaded: this script again, as a separate process (`--drive URL TASK_ID`), runs
   `--clients` asyncio clients for `--seconds`, each on its own connection, alternating
   status and history requests back to back (`--interval` adds a pause after each, jittered
   by +-50 %, the first requests spread over one interval, as dashboards poll); every
   request's latency is recorded (sending to the whole body read), errors are non-200
   answers and exceptions; the job's tokens/s is measured over the same time;
3. quiet again, so that drift of a shared machine shows; the quiet figure is the mean of
   both quiet windows.

Trained tokens/s comes from the job's trainer_log.jsonl (read from its run folder, not
through the API): the tokens of the steps that began and ended in the window over the time
those steps took (each record's tokens over its own tokens_per_s); a window needs two whole
steps, hence batch size 1 by default (about 100 tokens a step). The job is then stopped and
the server ended; everything has a timeout, and the server (and its worker) are killed in any
case.

    .venv/bin/python bench/api_load.py [--model smollm2-135m-instruct | tiny | DIR]
        [--clients 50] [--seconds 20] [--interval 0] [--samples 400] [--batch-size 1]

Targets (from the issue): p99 at most 50 ms, errors 0, training slowed by at most 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

TARGET_P99_MS = 50
TARGET_SLOWDOWN_PCT = 10
STARTUP_S = 180  # server start, model load included
FIRST_STEPS_S = 600  # job queued -> worker loads model and data -> first logged steps
WARMUP_STEPS = 3  # logged steps before the first window (the first carry warm-up)
REQUEST_TIMEOUT_S = 10
WORDS = ("model", "training", "data", "server", "request", "answer", "question", "learning",
         "rate", "batch", "step", "loss", "token", "adapter", "layer", "weight", "gradient",
         "memory", "queue", "worker", "status", "history")


# -- the load generator (a separate process) -------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


class _RawConnection:
    """One keep-alive HTTP/1.1 connection that only GETs: a load generator's client, written
    by hand (like wrk's) because httpx spends ~2 ms of CPU per request, more than the server
    does, and on 2 shared cores that CPU comes out of the training being measured."""

    def __init__(self, url: str) -> None:
        host_port = url.removeprefix("http://").rstrip("/")
        self.host, _, port = host_port.partition(":")
        self.port = int(port or 80)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> Any:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                       if line.lower().startswith("content-length:")), 0)
        body = await asyncio.wait_for(self.reader.readexactly(length), REQUEST_TIMEOUT_S)
        return _Answer(status, body)

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _Answer:
    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code, self.content = status_code, content

    def raise_for_status(self) -> None:
        if self.status_code != 200:
            raise OSError(f"HTTP {self.status_code}")


async def _drive(url: str, task_id: str, clients: int, seconds: float,
                 interval: float, kind: str = "raw") -> dict[str, Any]:
    paths = (f"/train/status/{task_id}", "/train/history")
    latencies: dict[str, list[float]] = {p: [] for p in paths}
    errors: list[str] = []
    connections: list[Any] = [
        _RawConnection(url) if kind == "raw" else
        httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) for _ in range(clients)]
    try:
        for connection in connections:  # connected before the clock starts
            (await connection.get("/health")).raise_for_status()
        print("start", flush=True)
        start = time.perf_counter()
        cpu_start = _own_cpu_s()
        deadline = start + seconds

        async def client(index: int, connection: httpx.AsyncClient) -> None:
            turn = index % 2  # half the clients begin with history
            pause = random.Random(index)
            if interval:  # spread the clients' first requests over one interval
                await asyncio.sleep(pause.uniform(0, interval))
            while time.perf_counter() < deadline:
                path = paths[turn]
                turn ^= 1
                sent = time.perf_counter()
                try:
                    answer = await connection.get(path)
                    if answer.status_code != 200:
                        errors.append(f"{path}: HTTP {answer.status_code}")
                    else:
                        latencies[path].append(time.perf_counter() - sent)
                except (TimeoutError, httpx.HTTPError, OSError, asyncio.IncompleteReadError,
                        ValueError, IndexError) as exc:
                    errors.append(f"{path}: {type(exc).__name__}: {exc}")
                if interval:  # jittered, so the clients do not fall into step
                    await asyncio.sleep(interval * pause.uniform(0.5, 1.5))

        await asyncio.gather(*(client(i, c) for i, c in enumerate(connections)))
        wall = time.perf_counter() - start
        generator_cpu = _own_cpu_s() - cpu_start
    finally:
        for connection in connections:
            await connection.aclose()
    every = [x for values in latencies.values() for x in values]
    done = len(every) + len(errors)

    def summary(values: list[float]) -> dict[str, Any]:
        return {"requests": len(values), "p50_ms": round(percentile(values, 0.5) * 1e3, 2),
                "p99_ms": round(percentile(values, 0.99) * 1e3, 2),
                "max_ms": round(max(values, default=0.0) * 1e3, 2)}

    return {
        "clients": clients, "client": kind, "seconds": round(wall, 2),
        "interval_s": interval,
        "requests": done, "requests_per_s": round(done / wall, 1),
        **{k: v for k, v in summary(every).items() if k != "requests"},
        "errors": len(errors), "error_examples": sorted(set(errors))[:5],
        "generator_cpu_ms_per_request": round(generator_cpu * 1e3 / max(done, 1), 3),
        "by_path": {"status": summary(latencies[paths[0]]),
                    "history": summary(latencies[paths[1]])},
    }


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(url: str, task_id: str, clients: int, seconds: float, interval: float,
          kind: str = "raw") -> None:
    print(json.dumps(asyncio.run(_drive(url, task_id, clients, seconds, interval, kind))),
          flush=True)


# -- the server and its job ----------------------------------------------------------------


def chat_dataset(samples: int, seed: int = 0) -> list[dict[str, Any]]:
    """Chat samples of varied length (about 40 to 160 tokens each)."""
    rng = random.Random(seed)

    def sentence(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."

    return [{"messages": [
        {"role": "user", "content": f"Question {i}: " + sentence(rng.randint(5, 25))},
        {"role": "assistant", "content": " ".join(sentence(rng.randint(5, 20))
                                                 for _ in range(rng.randint(2, 6)))}]}
        for i in range(samples)]


def model_dir(model: str, scratch: Path) -> Path:
    """The training base as a transformers folder: an alias or folder resolved with the
    user's TUNEFORGE_HOME (prepared models are reused), or `tiny`: a random 2-layer Llama
    built here with SmolLM2's tokenizer."""
    from tuneforge.models import resolve_model
    from tuneforge.settings import Settings

    if model != "tiny":
        return resolve_model(model, Settings())
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m-instruct",
                                                                Settings())))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    path = scratch / "tiny-llm"
    LlamaForCausalLM(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


class Service:
    """`tuneforge serve` on a free 127.0.0.1 port, in `work`, with TUNEFORGE_HOME `home`."""

    def __init__(self, model: Path, home: Path, work: Path) -> None:
        env = dict(os.environ, TUNEFORGE_HOME=str(home), HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tuneforge", "serve", f"base={model}", "--root",
             str(model), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=work,
            start_new_session=True)
        self.lines: list[str] = []
        self.url = self._wait_for_url()
        self.startup_s = time.perf_counter() - started
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def _wait_for_url(self) -> str:
        found: list[str] = []
        ready = threading.Event()

        def read() -> None:  # keeps draining, so the server never blocks on a full pipe
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                if not found and (match := re.search(r"serving on (http://\S+)", line)):
                    found.append(match.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(STARTUP_S)
        if not found:
            raise SystemExit("tuneforge serve did not start:\n" + "".join(self.lines[-40:]))
        return found[0]

    def wait_for(self, task_id: str, done: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.http.get(f"/train/status/{task_id}").json()
            if done(status):
                return status
            if status["status"] in ("failed", "stopped", "completed") or \
                    time.monotonic() > deadline:
                log = self.http.get(f"/train/{task_id}/logs").text
                raise SystemExit(f"job {task_id}: expected {what}, got {status}\n{log}")
            time.sleep(0.5)

    def stop(self) -> None:
        """End the server and every process of its session (its training worker)."""
        with contextlib.suppress(Exception):
            self.http.close()
        group = self.process.pid  # start_new_session: the group holds the worker too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        deadline = time.monotonic() + 30  # the worker checkpoints once its server is gone
        while time.monotonic() < deadline and _group_alive(group):
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def log_records(path: Path) -> list[dict[str, Any]]:
    """The complete training-loss records of trainer_log.jsonl."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    return [record for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()
            and (record := json.loads(line)).get("loss") is not None]


def tokens_per_s(records: list[dict[str, Any]]) -> float | None:
    """Trained tokens over the time the steps of `records` took (consecutive records)."""
    tokens = seconds = 0.0
    for before, after in zip(records, records[1:], strict=False):
        delta = after["tokens"] - before["tokens"]
        if after.get("tokens_per_s"):
            tokens += delta
            seconds += delta / after["tokens_per_s"]
    return tokens / seconds if seconds else None


def window(log: Path, seconds: float, min_steps: int = 3) -> dict[str, Any]:
    """The job's trained tokens/s over the next `seconds` (longer, up to 3x, until at least
    `min_steps` steps were logged in it)."""
    first = len(log_records(log))
    start = time.monotonic()
    while True:
        time.sleep(0.5)
        records = log_records(log)
        elapsed = time.monotonic() - start
        if elapsed >= seconds and (len(records) - first > min_steps or elapsed > 3 * seconds):
            break
    return measured(records, first, len(records), elapsed)


def measured(records: list[dict[str, Any]], first: int, end: int,
             elapsed: float) -> dict[str, Any]:
    """The figures of records[first:end], all logged in the window: record `first` is the
    starting point, so only steps that began and ended in the window count."""
    chosen = records[first:end]
    rate = tokens_per_s(chosen)
    return {"seconds": round(elapsed, 1), "steps": max(len(chosen) - 1, 0),
            "tokens_per_s": round(rate, 1) if rate else None}


def loaded_window(service: Service, task_id: str, log: Path,
                  args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the load generator as its own process; the job's tokens/s meanwhile."""
    command = [sys.executable, str(Path(__file__).resolve()), "--drive", service.url, task_id,
               "--clients", str(args.clients), "--seconds", str(args.seconds),
               "--interval", str(args.interval), "--client", args.client]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        assert driver.stdout is not None
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert driver.stdout is not None
            for line in driver.stdout:
                lines.append(line)
                ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120) or not lines or lines[0].strip() != "start":
            raise SystemExit(f"the load generator did not start: {lines}")
        first = len(log_records(log))
        start = time.monotonic()
        server_cpu = process_cpu_s(service.process.pid)
        try:
            driver.wait(timeout=args.seconds + 2 * REQUEST_TIMEOUT_S + 60)
        except subprocess.TimeoutExpired:
            raise SystemExit("the load generator did not finish in time") from None
        elapsed = time.monotonic() - start
        server_cpu = process_cpu_s(service.process.pid) - server_cpu
        records = log_records(log)
        time.sleep(0.2)  # the reader thread takes the last line
        if driver.returncode != 0 or len(lines) < 2:
            raise SystemExit(f"the load generator failed ({driver.returncode}): "
                             f"{''.join(lines)}{driver.stderr.read() if driver.stderr else ''}")
        load = json.loads(lines[-1])
        load["server_cpu_ms_per_request"] = round(server_cpu * 1e3 / max(load["requests"], 1),
                                                  3)
        return load, measured(records, first, len(records), elapsed)
    finally:
        if driver.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="alias or folder to train (and serve), or `tiny` (random)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="length of the load and of each training-speed window")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="pause of each client after each request (0: back to back)")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=1,
                        help="1: short steps, so that a 20 s window holds several whole ones")
    parser.add_argument("--cutoff-len", type=int, default=512)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="the load generator's HTTP client: raw (a minimal keep-alive "
                        "HTTP/1.1 GET, as wrk's) or httpx (~2 ms of CPU per request)")
    parser.add_argument("--drive", nargs=2, metavar=("URL", "TASK_ID"),
                        help="internal: be the load generator")
    args = parser.parse_args()
    if args.drive:
        drive(args.drive[0], args.drive[1], args.clients, args.seconds, args.interval,
              args.client)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    began = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="api-load-") as scratch:
        root = Path(scratch)
        home, work = root / "home", root / "work"
        (work / "data").mkdir(parents=True)
        home.mkdir()
        (work / "data" / "chat.jsonl").write_text("".join(
            json.dumps(r) + "\n" for r in chat_dataset(args.samples)), encoding="utf-8")
        base = model_dir(args.model, root)
        service = Service(base, home, work)
        try:
            answer = service.http.post("/train", json={
                "base_model": str(base), "dataset_path": "data/chat.jsonl",
                "num_epochs": 1000, "batch_size": args.batch_size, "learning_rate": 2e-4,
                "max_steps": 100_000, "logging_steps": 1, "save_steps": 100_000,
                "cutoff_len": args.cutoff_len})
            answer.raise_for_status()
            task_id = answer.json()["task_id"]
            submitted = time.perf_counter()
            status = service.wait_for(task_id, lambda s: s["state"] == "running",
                                      FIRST_STEPS_S, "running")
            log = Path(status["run_dir"]) / "trainer_log.jsonl"
            deadline = time.monotonic() + FIRST_STEPS_S
            while len(log_records(log)) < WARMUP_STEPS:
                service.wait_for(task_id, lambda s: s["state"] == "running", 5, "running")
                if time.monotonic() > deadline:
                    raise SystemExit(f"job {task_id} logged no steps in {FIRST_STEPS_S} s")
                time.sleep(1)
            first_steps_s = time.perf_counter() - submitted
            quiet = window(log, args.seconds)
            load, loaded = loaded_window(service, task_id, log, args)
            quiet_after = window(log, args.seconds)
            status = service.http.get(f"/train/status/{task_id}").json()
            service.http.post(f"/train/{task_id}/stop").raise_for_status()
            stopped = _wait_stopped(service, task_id)
        finally:
            service.stop()
    for name, measure in (("quiet", quiet), ("loaded", loaded), ("quiet after", quiet_after)):
        if measure["steps"] < 2:
            print(f"api_load: the {name} window saw {measure['steps']} training step(s): too "
                  "few to measure (is the machine busy?)", file=sys.stderr)
    # a window needs two steps at least; one step that straddles it says little
    rates = [w["tokens_per_s"] for w in (quiet, quiet_after) if w["steps"] >= 2]
    quiet_rate = sum(rates) / len(rates) if rates else None
    loaded_rate = loaded["tokens_per_s"] if loaded["steps"] >= 2 else None
    slowdown = (1 - loaded_rate / quiet_rate) * 100 if quiet_rate and loaded_rate else None
    result = {
        "benchmark": "api_load",
        "machine": machine(),
        "model": args.model,
        **{k: load[k] for k in ("clients", "seconds", "interval_s", "requests",
                                "requests_per_s", "p50_ms", "p99_ms", "max_ms", "errors",
                                "server_cpu_ms_per_request",
                                "generator_cpu_ms_per_request")},
        "by_path": load["by_path"],
        "error_examples": load["error_examples"],
        "train_tokens_per_s_quiet": round(quiet_rate, 1) if quiet_rate else None,
        "train_tokens_per_s_loaded": loaded_rate,
        "train_slowdown_pct": round(slowdown, 1) if slowdown is not None else None,
        "train_windows": {"quiet_before": quiet, "loaded": loaded, "quiet_after": quiet_after},
        "target_p99_ms": TARGET_P99_MS,
        "target_slowdown_pct": TARGET_SLOWDOWN_PCT,
        "p99_met": load["p99_ms"] <= TARGET_P99_MS and load["errors"] == 0,
        "slowdown_met": slowdown is not None and slowdown <= TARGET_SLOWDOWN_PCT,
        "job": {"batch_size": args.batch_size, "cutoff_len": args.cutoff_len,
                "samples": args.samples, "steps_at_stop": status["current_step"],
                "ended": stopped, "first_steps_s": round(first_steps_s, 1)},
        "server_startup_s": round(service.startup_s, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "total_s": round(time.perf_counter() - began, 1),
    }
    print(json.dumps(result))


def _wait_stopped(service: Service, task_id: str, timeout: float = 120) -> str:
    """The job's state once it has left running (it checkpoints at its next step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = service.http.get(f"/train/status/{task_id}").json()["state"]
        if state not in ("running", "stopping"):
            return state
        time.sleep(0.5)
    return "stopping (timed out)"


if __name__ == "__main__":
    main()
