"""LazyLLM's `launchers` module (`from tuneforge import launchers; launchers.slurm(...)`);
the launchers themselves are in tuneforge.jobs.launchers."""

from tuneforge.jobs.launchers import (
    LaunchedRun,
    Launcher,
    LaunchTimeoutError,
    LocalLauncher,
    RayLauncher,
    SlurmLauncher,
    TorchrunLauncher,
    empty,
    local,
    ray,
    remote,
    sco,
    slurm,
    torchrun,
)

__all__ = ["LaunchTimeoutError", "LaunchedRun", "Launcher", "LocalLauncher", "RayLauncher",
           "SlurmLauncher", "TorchrunLauncher", "empty", "local", "ray", "remote", "sco",
           "slurm", "torchrun"]
