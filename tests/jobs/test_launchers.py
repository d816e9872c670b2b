"""Launchers (jobs/launchers.py): real tiny runs on this machine, on a
local Ray head and a local one-node Slurm cluster, each skipped with its reason where it
cannot start; the Slurm protocol against recorded command outputs (fake commands printing
tests/jobs/slurm_outputs/); remote/sco choice; argument checks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuneforge import launchers
from tuneforge.errors import ConfigError, NotFoundError, UnsupportedError
from tuneforge.jobs.launchers import (
    SLURM_STATES,
    LaunchedRun,
    Launcher,
    LaunchTimeoutError,
    SlurmRun,
    slurm_state,
)
from tuneforge.settings import Settings

OUTPUTS = Path(__file__).parent / "slurm_outputs"
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "scontrol")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_run(model: Path, max_steps: int) -> Path:
    """A tiny LoRA run prepared (trainer.json written, nothing run): its directory."""
    from tuneforge.data.summary import demo_dataset_dir
    from tuneforge.trainer import LLMFinetune, TrainConfig

    trainer = LLMFinetune(
        train_type=str(model), dataset=str(demo_dataset_dir() / "forge_identity.json"),
        train_config=TrainConfig(epoch=1, batch_size=2, learning_rate=5e-3, max_seq_len=96,
                                 peft_type="LoRA", extras={"max_steps": max_steps,
                                                           "logging_steps": 1,
                                                           "save_steps": 2, "seed": 3}),
        evaluate=False)
    trainer.prepare()
    return trainer.paths.root


def status(run_dir: Path) -> str:
    from tuneforge.pipeline.trainers import FinetuneTrainer

    return FinetuneTrainer.load(run_dir).status


def wait_until_training(run_dir: Path, run: LaunchedRun, timeout: float = 120) -> None:
    """Until the run's first training step is logged (so a cancel stops a training)."""
    deadline = time.monotonic() + timeout
    log = run_dir / "trainer_log.jsonl"
    while not (log.is_file() and log.read_text().strip()):
        assert time.monotonic() < deadline and run.state() in ("pending", "running"), \
            run.logs()
        time.sleep(0.2)


def complete_one_cancel_another(launcher: Launcher, model: Path) -> tuple[LaunchedRun, ...]:
    """Two runs at once: a 2-step one runs to its end, a 400-step one is cancelled while it
    trains; both end as the launcher and the trainer say."""
    from tuneforge.registry import Registry

    settings = Settings()
    # create the registry first: two workers creating it at once can both fail to switch
    # a new SQLite file to WAL ("database is locked", registry/db.py)
    Registry.open(settings)
    short, long = prepare_run(model, 2), prepare_run(model, 400)
    done, stopped = launcher.launch(short, settings), launcher.launch(long, settings)
    wait_until_training(long, stopped)
    with pytest.raises(LaunchTimeoutError) as timed_out:
        stopped.wait(timeout=0.1, poll_s=0.05)
    assert isinstance(timed_out.value, TimeoutError)
    stopped.cancel()
    assert done.wait(timeout=180, poll_s=0.5) == "completed", done.logs()
    assert stopped.wait(timeout=180, poll_s=0.5) == "cancelled", stopped.logs()
    assert status(short) == "ModelPublished"
    assert status(long) == "TrainStopped"
    assert (short / "output" / "adapter_config.json").is_file()
    return done, stopped


# -- this machine ------------------------------------------------------------------------------


@pytest.mark.serial
def test_local_completes_one_run_and_cancels_another(tiny_llm_dir: Path) -> None:
    # ~11 s: two workers importing torch side by side; the one real run of the fast suite
    done, stopped = complete_one_cancel_another(launchers.local(), tiny_llm_dir)
    assert done.id.isdigit()
    assert "ModelPublished" in done.logs()  # the worker's last line
    assert "SIGTERM: saving a checkpoint at the next step" in stopped.logs()


def test_launch_needs_a_prepared_run_dir(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="trainer.json"):
        launchers.local().launch(tmp_path, Settings())


def test_wait_raises_a_timeout_error_naming_the_run() -> None:
    class Forever(LaunchedRun):
        id = "r1"

        def state(self) -> str:
            return "pending"

    with pytest.raises(LaunchTimeoutError, match="Forever r1: still pending after 0.05 s"):
        Forever().wait(timeout=0.05, poll_s=0.01)


# -- Slurm: a real one-node cluster on 127.0.0.1 -----------------------------------------------

SLURM_CONF = """\
ClusterName=tuneforge
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=tftest Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Debian's slurmctld and slurmd on 127.0.0.1 (auth/none, no accounting) for this
    module: its slurm.conf. Needs root and the slurm-wlm package."""
    missing = [c for c in ("slurmctld", "slurmd", *SLURM_COMMANDS) if not shutil.which(c)]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)}): apt-get install slurm-wlm")
    if os.geteuid() != 0:
        pytest.skip("a local Slurm cluster runs its daemons as root")
    root = tmp_path_factory.mktemp("slurm")
    (root / "state").mkdir()
    (root / "spool").mkdir()
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=socket.gethostname().split(".")[0],
                                      ctld_port=free_port(), d_port=free_port(), root=root,
                                      cpus=os.cpu_count()))
    env = os.environ | {"SLURM_CONF": str(conf)}
    log = (root / "daemons.log").open("wb")
    daemons = [subprocess.Popen([daemon, "-D", *extra, "-f", str(conf)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
               for daemon, extra in (("slurmctld", ["-i"]), ("slurmd", []))]
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                             text=True).stdout.strip() != "idle":
            assert time.monotonic() < deadline, (root / "daemons.log").read_text()
            time.sleep(0.3)
        yield conf
    finally:
        subprocess.run(["scancel", "--partition=tftest"], env=env, capture_output=True)
        for daemon in daemons:
            daemon.terminate()
            daemon.wait(timeout=30)
        log.close()


@pytest.mark.serial
def test_real_slurm_completes_one_run_and_cancels_another(
        tiny_llm_dir: Path, slurm_conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ~15-20 s (the cluster starts in ~1-3 s, then two workers import torch)
    monkeypatch.setenv("SLURM_CONF", str(slurm_conf))
    done, stopped = complete_one_cancel_another(launchers.slurm("tftest"), tiny_llm_dir)
    assert done.id.isdigit()
    assert "ModelPublished" in done.logs()
    assert "SIGTERM: saving a checkpoint at the next step" in stopped.logs()


# -- Slurm: recorded command outputs -----------------------------------------------------------

FAKE_COMMAND = """#!{python}
import json, os, pathlib, sys
here = pathlib.Path(os.environ["FAKE_SLURM"])
name = pathlib.Path(sys.argv[0]).name
with (here / "calls.jsonl").open("a") as calls:
    calls.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
for suffix, stream in ((".out", sys.stdout), (".err", sys.stderr)):
    if (here / (name + suffix)).is_file():
        stream.write((here / (name + suffix)).read_text())
rc = here / (name + ".rc")
sys.exit(int(rc.read_text()) if rc.is_file() else 0)
"""


class FakeSlurm:
    """Fake sbatch, squeue, sacct, scancel and scontrol first on PATH; each prints the
    recorded output (tests/jobs/slurm_outputs/NAME.out, .err, .rc) chosen by `answer`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def answer(self, command: str, recorded: str | None) -> None:
        """`command` prints the recording `recorded` from now on (None: nothing, exit 0)."""
        for suffix in (".out", ".err", ".rc"):
            (self.root / (command + suffix)).unlink(missing_ok=True)
            if recorded is not None and (OUTPUTS / (recorded + suffix)).is_file():
                shutil.copy(OUTPUTS / (recorded + suffix), self.root / (command + suffix))

    def calls(self) -> list[list[str]]:
        path = self.root / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] \
            if path.is_file() else []


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    """Recorded-output Slurm (FakeSlurm) first on PATH; sbatch answers job id 6."""
    root = tmp_path / "fake-slurm"
    root.mkdir()
    for command in SLURM_COMMANDS:
        path = root / command
        path.write_text(FAKE_COMMAND.format(python=sys.executable))
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{root}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(root))
    fake = FakeSlurm(root)
    fake.answer("sbatch", "sbatch_parsable")
    return fake


def prepared_dir(home: Path) -> Path:
    run_dir = home / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "trainer.json").write_text("{}")
    return run_dir


def test_slurm_writes_this_batch_script(home: Path, fake_slurm: FakeSlurm) -> None:
    run_dir = prepared_dir(home)
    run = launchers.slurm("gpu", nproc=4, ngpus=4, time="02:00:00", account="lab",
                          sbatch_args=["--mem=64G", "--cpus-per-task=16"],
                          python="/opt/py/bin/python").launch(run_dir, Settings())
    assert run.id == "6"
    assert fake_slurm.calls() == [["sbatch", "--parsable", str(run_dir / "slurm.sbatch")]]
    assert (run_dir / "slurm.sbatch").read_text() == f"""\
#!/bin/bash
#SBATCH --job-name=tuneforge-r1
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --output={run_dir}/slurm-%j.out
#SBATCH --partition=gpu
#SBATCH --gpus-per-node=4
#SBATCH --time=02:00:00
#SBATCH --account=lab
#SBATCH --mem=64G
#SBATCH --cpus-per-task=16
export TUNEFORGE_HOME={home}
srun /opt/py/bin/python -m tuneforge.jobs.worker {run_dir}
"""


def test_slurm_refusal_names_the_script_and_what_sbatch_said(
        home: Path, fake_slurm: FakeSlurm) -> None:
    """Recorded outputs: sbatch refusing an unknown partition."""
    run_dir = prepared_dir(home)
    fake_slurm.answer("sbatch", "sbatch_bad_partition")
    with pytest.raises(ConfigError, match="invalid partition specified: nope") as error:
        launchers.slurm("nope").launch(run_dir, Settings())
    assert error.value.file == str(run_dir / "slurm.sbatch")


def test_slurm_partition_defaults_to_tuneforge_slurm_part(
        fake_slurm: FakeSlurm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEFORGE_SLURM_PART", "batch")
    assert launchers.slurm().partition == "batch"
    assert launchers.slurm("debug").partition == "debug"


def test_slurm_state_follows_squeue_then_sacct_then_scontrol(
        home: Path, fake_slurm: FakeSlurm) -> None:
    """Recorded outputs of Debian's Slurm 22.05 (sacct's 'CANCELLED by 0' is written by
    hand from sacct(1): the recording cluster had no accounting)."""
    run = launchers.slurm().launch(prepared_dir(home), Settings())
    fake_slurm.answer("squeue", "squeue_pending")
    assert run.state() == "pending"
    fake_slurm.answer("squeue", "squeue_running")
    assert run.state() == "running"
    fake_slurm.answer("squeue", "squeue_gone")  # finished: squeue prints nothing
    fake_slurm.answer("sacct", "sacct_disabled")
    fake_slurm.answer("scontrol", "scontrol_failed")
    assert run.state() == "failed"
    assert run.wait(timeout=1) == "failed"
    assert [c[0] for c in fake_slurm.calls()] == [
        "sbatch", "squeue", "squeue", "squeue", "sacct", "scontrol"]  # final: asked once


def test_slurm_state_prefers_sacct_once_the_job_left_squeue(
        home: Path, fake_slurm: FakeSlurm) -> None:
    """Recorded outputs (see above): squeue no longer knows the job, sacct says cancelled."""
    run = launchers.slurm().launch(prepared_dir(home), Settings())
    fake_slurm.answer("squeue", "squeue_unknown")
    fake_slurm.answer("sacct", "sacct_cancelled_by")
    assert run.state() == "cancelled"
    assert ["sacct", "-n", "-X", "-P", "-j", "6", "-o", "State"] in fake_slurm.calls()


def test_slurm_job_nobody_knows_is_not_found(home: Path, fake_slurm: FakeSlurm) -> None:
    """Recorded outputs (see above): squeue, sacct and scontrol all fail."""
    run = launchers.slurm().launch(prepared_dir(home), Settings())
    fake_slurm.answer("squeue", "squeue_unknown")
    fake_slurm.answer("sacct", "sacct_disabled")
    fake_slurm.answer("scontrol", "scontrol_unknown")
    with pytest.raises(NotFoundError, match="Slurm job not found: '6'"):
        run.state()


def test_slurm_cancel_signals_a_running_job_and_scancels_a_pending_one(
        home: Path, fake_slurm: FakeSlurm) -> None:
    """Recorded outputs (see above); a graceful stop ends the job COMPLETED: ours says
    cancelled."""
    run = launchers.slurm().launch(prepared_dir(home), Settings())
    fake_slurm.answer("squeue", "squeue_running")
    run.cancel()
    assert fake_slurm.calls()[-1] == ["scancel", "--signal=TERM", "6"]
    fake_slurm.answer("squeue", "squeue_gone")
    fake_slurm.answer("sacct", "sacct_disabled")
    fake_slurm.answer("scontrol", "scontrol_completed")
    assert run.state() == "cancelled"
    pending = SlurmRun("7", home)
    fake_slurm.answer("squeue", "squeue_pending")
    pending.cancel()
    assert fake_slurm.calls()[-1] == ["scancel", "7"]


@pytest.mark.parametrize("raw", sorted(SLURM_STATES))
def test_every_slurm_state_maps_to_one_of_ours(raw: str) -> None:
    assert slurm_state(raw) in ("pending", "running", "completed", "failed", "cancelled")


@pytest.mark.parametrize(("raw", "ours"), [
    ("PENDING", "pending"), ("CONFIGURING", "pending"), ("RUNNING", "running"),
    ("COMPLETING", "running"), ("COMPLETED", "completed"), ("FAILED", "failed"),
    ("CANCELLED", "cancelled"), ("CANCELLED by 1000", "cancelled"), ("TIMEOUT", "failed"),
    ("OUT_OF_MEMORY", "failed"), ("NODE_FAIL", "failed"), ("PREEMPTED", "failed"),
    ("BOOT_FAIL", "failed"), ("DEADLINE", "failed")])
def test_slurm_states_the_brief_names(raw: str, ours: str) -> None:
    assert slurm_state(raw) == ours


def test_slurm_without_its_commands_says_so(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UnsupportedError, match="Slurm's commands .* not found on PATH"):
        launchers.slurm("debug")


# -- choice, aliases, checks -------------------------------------------------------------------


def test_remote_picks_slurm_with_the_configured_partition(
        fake_slurm: FakeSlurm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEFORGE_DEFAULT_LAUNCHER", "slurm")
    monkeypatch.setenv("TUNEFORGE_SLURM_PART", "a100")
    launcher = launchers.remote(nnode=1, nproc=1, ngpus=4, time=60)
    assert isinstance(launcher, launchers.SlurmLauncher)
    assert (launcher.partition, launcher.ngpus, launcher.time) == ("a100", 4, 60)


def test_remote_picks_ray_at_the_configured_address(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray.job_submission", reason="ray is absent: pip install 'ray[default]'")
    monkeypatch.setenv("TUNEFORGE_DEFAULT_LAUNCHER", "ray")
    monkeypatch.setenv("TUNEFORGE_RAY_ADDRESS", "http://127.0.0.1:8265")
    launcher = launchers.remote(ngpus=2)
    assert isinstance(launcher, launchers.RayLauncher)
    assert (launcher.address, launcher.ngpus) == ("http://127.0.0.1:8265", 2)


@pytest.mark.parametrize("name", ["local", "empty", "LOCAL"])
def test_remote_picks_this_machine(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEFORGE_DEFAULT_LAUNCHER", name)
    assert type(launchers.remote(nproc=2)) is launchers.LocalLauncher


@pytest.mark.parametrize("value", [None, "kubernetes"])
def test_remote_without_a_known_launcher_says_what_to_set(
        value: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("TUNEFORGE_DEFAULT_LAUNCHER", raising=False)
    else:
        monkeypatch.setenv("TUNEFORGE_DEFAULT_LAUNCHER", value)
    with pytest.raises(ConfigError, match="TUNEFORGE_DEFAULT_LAUNCHER") as error:
        launchers.remote(ngpus=4)
    assert "slurm, ray, sco, empty, local" in str(error.value)


def test_remote_rejects_an_argument_the_chosen_launcher_lacks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEFORGE_DEFAULT_LAUNCHER", "local")
    with pytest.raises(ConfigError, match="takes no argument partition") as error:
        launchers.remote(partition="gpu")
    assert error.value.field == "partition"


def test_sco_warns_and_submits_to_slurm(fake_slurm: FakeSlurm,
                                        caplog: pytest.LogCaptureFixture) -> None:
    with pytest.warns(UserWarning, match="SenseTime's cluster"):
        launcher = launchers.sco("pat", ngpus=8)
    assert isinstance(launcher, launchers.SlurmLauncher)
    assert (launcher.partition, launcher.ngpus) == ("pat", 8)
    assert "launchers.slurm" in caplog.text


def test_remote_picks_sco_as_slurm(fake_slurm: FakeSlurm,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEFORGE_DEFAULT_LAUNCHER", "sco")
    with pytest.warns(UserWarning):
        assert isinstance(launchers.remote(ngpus=8), launchers.SlurmLauncher)


@pytest.mark.parametrize(("factory", "field", "value"), [
    (launchers.local, "nproc", 0), (launchers.local, "nnode", -1),
    (launchers.torchrun, "ngpus", 0), (launchers.local, "nproc", 1.5),
    (launchers.empty, "nproc", True), (launchers.local, "ngpus", "4")])
def test_counts_must_be_positive_integers(factory, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match="expected a positive integer") as error:
        factory(**{field: value})
    assert error.value.field == field


@pytest.mark.parametrize("factory", [launchers.local, launchers.torchrun, launchers.slurm])
def test_several_nodes_point_to_torchrun_per_node(factory, fake_slurm: FakeSlurm) -> None:
    with pytest.raises(UnsupportedError, match="torchrun --nnodes N"):
        factory(nnode=2)


def test_distributed_asks_for_torchrun_only_with_several_processes() -> None:
    from tuneforge.config.load import load_run_config

    assert launchers.local().distributed() == {}
    assert launchers.local(nproc=4).distributed() == {"launcher": "torchrun",
                                                      "nproc_per_node": 4}
    values = launchers.torchrun(nproc=2).distributed()
    assert values == {"launcher": "torchrun", "nproc_per_node": 2, "nnodes": 1}
    distributed = load_run_config(values=values).distributed
    assert (distributed.launcher, distributed.nproc_per_node) == ("torchrun", 2)


def test_settings_travel_to_the_worker(home: Path, tmp_path: Path) -> None:
    from tuneforge.jobs.launchers import settings_env

    settings = Settings(db_url="sqlite:///x.db", runs_dir=tmp_path / "runs")
    assert settings_env(settings) == {"TUNEFORGE_HOME": str(home),
                                      "TUNEFORGE_DB_URL": "sqlite:///x.db",
                                      "TUNEFORGE_RUNS_DIR": str(tmp_path / "runs")}


# -- Ray: a head on 127.0.0.1 for this module --------------------------------------------------


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray head (2 CPUs, dashboard on a free port) started for this module, stopped after."""
    pytest.importorskip("ray.job_submission", reason="ray is absent: pip install 'ray[default]'")
    from ray.job_submission import JobSubmissionClient

    root = tmp_path_factory.mktemp("ray")
    gcs, dashboard, client, agent = (free_port() for _ in range(4))
    log = (root / "ray.log").open("wb")
    # --block: the command holds every Ray process and stops them all on SIGTERM
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
         "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", "--num-cpus=2",
         "--object-store-memory=80000000", "--disable-usage-stats", f"--temp-dir={root}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert head.poll() is None, (root / "ray.log").read_text()
            try:
                JobSubmissionClient(address)
                break
            except (ConnectionError, RuntimeError):
                assert time.monotonic() < deadline, (root / "ray.log").read_text()
                time.sleep(0.5)
        yield address
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()


@pytest.mark.serial
def test_ray_completes_one_run_and_cancels_another(tiny_llm_dir: Path, ray_address: str) -> None:
    # ~20 s (a Ray head starts in ~5 s, then two workers import torch)
    done, stopped = complete_one_cancel_another(
        launchers.ray(ray_address, num_cpus=1), tiny_llm_dir)
    assert done.id.startswith("raysubmit_")
    assert "ModelPublished" in done.logs()
    assert "SIGTERM: saving a checkpoint at the next step" in stopped.logs()


def test_ray_without_an_address_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNEFORGE_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match="TUNEFORGE_RAY_ADDRESS or RAY_ADDRESS"):
        launchers.ray()


def test_ray_missing_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.setitem(sys.modules, "ray.job_submission", None)
    with pytest.raises(UnsupportedError, match=r"pip install 'ray\[default\]'"):
        launchers.ray("http://127.0.0.1:8265")
