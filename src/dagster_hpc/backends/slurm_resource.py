"""SlurmResource: where and how ``mode="slurm"`` submits (login node, default queue, paths).

Nested in ``ComputeResource(mode="slurm", slurm=SlurmResource(...))``. Like every Dagster
resource it is immutable and only describes; ``make_backend()`` builds the per-run
``SlurmBackend`` that holds runtime state. ``from_env()`` reads the site settings from
environment variables, so the same definitions run on a laptop and against a real cluster.
"""

from __future__ import annotations

import os

from pydantic import Field

from dagster_hpc._strict import StrictResource, refuse_unknown_env
from dagster_hpc.backends.slurm import DEFAULT_REMOTE_BASE, SlurmBackend, base_dir_expr
from dagster_hpc.envs.config import EnvConfig
from dagster_hpc.errors import ConfigError
from dagster_hpc.queue import QueueConfig
from dagster_hpc.settings import env_names, read_env
from dagster_hpc.ssh_resource import SSHConnectionResource
from dagster_hpc.transport.base import Transport

DEFAULT_ENV_PREFIX = "DAGSTER_HPC_SLURM"
# {prefix}_{suffix} -> QueueConfig field (strings; ints converted).
QUEUE_ENV_FIELDS: dict[str, str] = env_names(
    (
        "partition",
        "account",
        "qos",
        "reservation",
        "constraint",
        "time_limit",
        "mem",
        "mem_per_cpu",
        "nodes",
        "ntasks",
        "cpus_per_task",
        "gpus_per_node",
        "signal_before_timeout",
        "requeue",
        "max_requeues",
    ),
    aliases={"SIGNAL": "signal_before_timeout"},  # the name before one-name-per-setting
)
_INT_FIELDS = ("nodes", "ntasks", "cpus_per_task", "gpus_per_node", "max_requeues")
_BOOL_FIELDS = {
    "requeue": {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
}
# {prefix}_{suffix} -> SlurmResource field.
RESOURCE_ENV_FIELDS: dict[str, str] = env_names(
    ("remote_base_dir", "python", "activate", "cluster_name")
)
SLURM_ENV_SUFFIXES = (*QUEUE_ENV_FIELDS, *RESOURCE_ENV_FIELDS)


class SlurmResource(StrictResource):
    """A Slurm cluster reached through ``ssh`` (or this machine, when ``ssh`` is None)."""

    ssh: SSHConnectionResource | None = Field(
        default=None,
        description="The login node; None: this machine is the login node (sbatch runs locally).",
    )
    queue: QueueConfig = Field(
        default_factory=QueueConfig, description="Default resource request of every job."
    )
    remote_base_dir: str = Field(
        default=DEFAULT_REMOTE_BASE,
        description="Run directories on the cluster (absolute or ~/...), created 0700.",
    )
    python: str | None = Field(
        default=None,
        description="Interpreter for Python payloads on the compute nodes (default python3).",
    )
    activate: str | None = Field(
        default=None,
        description="Script sourced before the payload starts (e.g. /path/env/bin/activate).",
    )
    cluster_name: str | None = Field(
        default=None,
        description="Label in messages and the shared poll cache (default: user@host:port).",
    )
    env: EnvConfig | None = Field(
        default=None,
        description="Payload environment: built from a lock and shipped once (cached by content), or a "
        "pre-deployed path verified before submit. Replaces python/activate. From DAGSTER_HPC_ENV_* in from_env().",
    )

    reattach: bool = Field(
        default=True,
        description="When a step runs again (step retry, re-execution from failure) and the Slurm job an "
        "earlier attempt submitted is still queued/running or finished with exit code 0, wait for that job "
        "instead of submitting a new one.",
    )

    @classmethod
    def from_env(
        cls, prefix: str = DEFAULT_ENV_PREFIX, ssh_prefix: str | None = None
    ) -> SlurmResource:
        """Build from ``{prefix}_PARTITION``, ``_ACCOUNT``, ``_TIME_LIMIT``, ... and the SSH
        settings of ``SSHConnectionResource.from_env(ssh_prefix)`` when ``{ssh_prefix}_HOST`` is set."""
        refuse_unknown_env(prefix, SLURM_ENV_SUFFIXES)
        queue: dict[str, object] = {}
        names: dict[str, str] = {}
        for field, (name, raw) in read_env(prefix, QUEUE_ENV_FIELDS).items():
            names[field] = name
            if field in _INT_FIELDS:
                if not raw.lstrip("-").isdigit():
                    raise ConfigError(f"{name}={raw!r} is not a whole number")
                queue[field] = int(raw)
            elif field in _BOOL_FIELDS:
                value = _BOOL_FIELDS[field].get(raw.strip().lower())
                if value is None:
                    raise ConfigError(f"{name}={raw!r} is not a yes/no value: use 1 or 0")
                queue[field] = value
            else:
                queue[field] = raw
        try:
            kwargs: dict[str, object] = {"queue": QueueConfig(**queue)}
        except ConfigError as exc:
            listed = ", ".join(names[f] for f in queue)
            raise ConfigError(
                f"{exc}\n(the queue settings come from the environment: {listed})"
            ) from None
        for field, (_name, raw) in read_env(prefix, RESOURCE_ENV_FIELDS).items():
            kwargs[field] = raw
        from dagster_hpc.ssh_resource import DEFAULT_ENV_PREFIX as SSH_PREFIX

        env = EnvConfig.from_env()
        if env is not None:
            kwargs["env"] = env
        sp = ssh_prefix or SSH_PREFIX
        if os.environ.get(f"{sp}_HOST"):
            kwargs["ssh"] = SSHConnectionResource.from_env(sp)
        return cls(**kwargs)

    def cluster_label(self) -> str:
        if self.cluster_name:
            return self.cluster_name
        if self.ssh is None:
            return "localhost"
        target = self.ssh.to_target()
        return target.label

    def make_transport(self) -> Transport:
        if self.ssh is None:
            from dagster_hpc.transport.local import LocalTransport

            return LocalTransport()
        return self.ssh.get_transport()

    def make_backend(self) -> SlurmBackend:
        """A fresh backend for one ``run()`` (validates settings before connecting)."""
        base_dir_expr(self.remote_base_dir)
        return SlurmBackend(
            self.make_transport(),
            cluster=self.cluster_label(),
            queue=self.queue,
            remote_base_dir=self.remote_base_dir,
            python=self.python,
            activate=self.activate,
            env=self.env,
            reattach=self.reattach,
        )
