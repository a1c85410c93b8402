"""How processes start inside an allocation: pure functions from a request to script text."""

from __future__ import annotations

from pathlib import Path

from dagster_hpc.launchers.base import Launcher, LaunchRequest
from dagster_hpc.launchers.bash import BashLauncher, ExecLauncher
from dagster_hpc.launchers.python import PythonLauncher
from dagster_hpc.launchers.ray import RayLauncher
from dagster_hpc.launchers.srun import SrunLauncher
from dagster_hpc.launchers.torchrun import TorchrunLauncher

__all__ = [
    "BashLauncher",
    "ExecLauncher",
    "LaunchRequest",
    "Launcher",
    "PythonLauncher",
    "RayLauncher",
    "SrunLauncher",
    "TorchrunLauncher",
    "default_launcher_for",
]


def default_launcher_for(payload: str | Path | None) -> Launcher:
    """``.py`` -> PythonLauncher, ``.sh``/``.bash`` -> BashLauncher, anything else runs directly."""
    if payload is None:
        return ExecLauncher()
    suffix = Path(payload).suffix.lower()
    if suffix == ".py":
        return PythonLauncher()
    if suffix in (".sh", ".bash"):
        return BashLauncher()
    return ExecLauncher()
