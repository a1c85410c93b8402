"""dagster-hpc: the same Dagster assets on a laptop, in CI and on Slurm; only changed samples recomputed.

This module is the public API: explicit re-exports only. They are resolved lazily (PEP 562) so
that ``import dagster_hpc.incremental`` on a compute node does not import Dagster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dagster_hpc.errors import (
    AuthenticationError,
    CancelNotConfirmedError,
    ConfigError,
    DagsterHpcError,
    EnvBuildError,
    FilesystemFullError,
    HostKeyError,
    PayloadError,
    RemoteCommandError,
    SlurmJobError,
    SSHMasterExpiredError,
    SubmissionError,
    TransportError,
)

# public name -> module that defines it
_LAZY = {
    "ComputeResource": "dagster_hpc.compute",
    "EnvConfig": "dagster_hpc.envs.config",
    "BashLauncher": "dagster_hpc.launchers",
    "ExecLauncher": "dagster_hpc.launchers",
    "PythonLauncher": "dagster_hpc.launchers",
    "RayLauncher": "dagster_hpc.launchers",
    "SrunLauncher": "dagster_hpc.launchers",
    "TorchrunLauncher": "dagster_hpc.launchers",
    "Launcher": "dagster_hpc.launchers",
    "LocalTransport": "dagster_hpc.transport.local",
    "SSHConnectionResource": "dagster_hpc.ssh_resource",
    "SSHTarget": "dagster_hpc.transport.auth",
    "SSHTransport": "dagster_hpc.transport.ssh",
    "OpenSSHTransport": "dagster_hpc.transport.openssh",
    "QueueConfig": "dagster_hpc.queue",
    "incremental_asset": "dagster_hpc.incremental_dagster",
    "SlurmResource": "dagster_hpc.backends.slurm_resource",
    "hpc_executor": "dagster_hpc.executor",
}

if TYPE_CHECKING:
    from dagster_hpc.backends.slurm_resource import SlurmResource
    from dagster_hpc.compute import ComputeResource
    from dagster_hpc.envs.config import EnvConfig
    from dagster_hpc.executor import hpc_executor
    from dagster_hpc.incremental_dagster import incremental_asset
    from dagster_hpc.launchers import (
        BashLauncher,
        ExecLauncher,
        Launcher,
        PythonLauncher,
        RayLauncher,
        SrunLauncher,
        TorchrunLauncher,
    )
    from dagster_hpc.queue import QueueConfig
    from dagster_hpc.ssh_resource import SSHConnectionResource
    from dagster_hpc.transport.auth import SSHTarget
    from dagster_hpc.transport.local import LocalTransport
    from dagster_hpc.transport.openssh import OpenSSHTransport
    from dagster_hpc.transport.ssh import SSHTransport


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dagster_hpc' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AuthenticationError",
    "BashLauncher",
    "CancelNotConfirmedError",
    "ComputeResource",
    "ConfigError",
    "DagsterHpcError",
    "EnvBuildError",
    "FilesystemFullError",
    "EnvConfig",
    "ExecLauncher",
    "HostKeyError",
    "Launcher",
    "LocalTransport",
    "OpenSSHTransport",
    "PayloadError",
    "PythonLauncher",
    "QueueConfig",
    "RayLauncher",
    "RemoteCommandError",
    "SSHConnectionResource",
    "SSHMasterExpiredError",
    "SSHTarget",
    "SSHTransport",
    "SlurmJobError",
    "SlurmResource",
    "SrunLauncher",
    "SubmissionError",
    "TorchrunLauncher",
    "TransportError",
    "hpc_executor",
    "incremental_asset",
]
