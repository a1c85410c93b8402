"""Multi-node Ray inside the allocation: a private Ray cluster for one payload, started and
stopped by the launch script (by process group, never ``ray stop``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from dagster_hpc.errors import ConfigError
from dagster_hpc.launchers.base import Launcher, LaunchRequest, quote_all
from dagster_hpc.launchers.command import (
    FREE_PORT_SNIPPET,
    check_shell_command,
    check_srun_options,
    payload_command,
)
from dagster_hpc.launchers.ray_script import (
    BODY,
    EXIT_RAY_NOT_UP,
    JOIN_POLL_S,
    JOIN_TIMEOUT_S,
    JOIN_WAIT,
    KEEP_LOGS_FUNCTION,
    RAY_STARTED_LINE,
    RAY_TEMP_ROOT_MAX,
    STOP_FILE,
    STOP_FILE_POLL_S,
    STOP_FUNCTION,
    STOP_GRACE_S,
    STOP_POLL_S,
    WORKER,
    WORKER_STOP_MARGIN_S,
)

RESERVED_START_ARGS = (
    "--head",
    "--block",
    "--address",
    "--port",
    "--temp-dir",
    "--node-ip-address",
    "--num-cpus",
    "--num-gpus",
)
_START_ARG_RE = re.compile(r"^--[a-z][a-z0-9-]*(=.*)?$")

FORWARDED_SIGNALS = ("TERM", "INT", "USR1", "USR2")


@dataclass(frozen=True)
class RayLauncher(Launcher):
    """A private multi-node Ray cluster for one payload, inside the job's allocation.

    The head starts on the first node (beside the payload, which runs there with
    ``RAY_ADDRESS`` exported, so ``ray.init()`` connects to it); ``srun`` starts one worker
    node on every other node. Each node is ``ray start --block`` in its own process group with
    its own temp dir under the run directory (``ray-cluster/<node>``; logs stay with the run), and
    gets the CPUs/GPUs Slurm gave it, not the whole machine. The payload starts only when all
    nodes have joined, i.e. every node's ``ray start`` printed "Ray runtime started." (Ray
    prints it once the node is registered in the GCS; the wait reads the start logs and does not
    import Ray) within ``join_timeout_s`` (else exit code 93 and Ray's log paths).
    Afterwards exactly this cluster's process groups get TERM, ``stop_grace_s`` to finish, then
    KILL: no ``ray stop``, which would kill every Ray on the node, and no unbounded hang.

    ``node_ip_command`` is a shell command printing a node's IP (run on each node); without
    it workers reach the head by its Slurm node name and Ray picks each node's IP. Sites
    where nodes share an address (the local test cluster) map names to distinct IPs there,
    and set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (extra_env) so Ray keeps 127.x addresses.
    Without Slurm (local mode) the same script starts a one-node cluster on this machine.
    The ``ray`` executable and the interpreter's ``ray`` package must be in the job's
    environment. Note Unix socket paths are limited to 107 bytes: keep run directories short.
    """

    node_ip_command: str | None = None
    ray: str = "ray"
    ray_start_args: tuple[str, ...] = ()  # extra `ray start` options for every node
    srun_options: tuple[str, ...] = ()
    join_timeout_s: float = JOIN_TIMEOUT_S
    stop_grace_s: float = STOP_GRACE_S
    name: ClassVar[str] = "ray"

    def __post_init__(self) -> None:
        owner = "RayLauncher"
        check_shell_command(owner, "node_ip_command", self.node_ip_command)
        if not isinstance(self.ray, str) or not self.ray or "\n" in self.ray:
            raise ConfigError(f"{owner}: ray={self.ray!r} must be the ray executable or its path")
        for field in ("join_timeout_s", "stop_grace_s"):
            value = getattr(self, field)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value <= 3600
            ):
                raise ConfigError(
                    f"{owner}: {field}={value!r} must be a number of seconds in (0, 3600]"
                )
        if isinstance(self.ray_start_args, str):
            raise ConfigError(
                f"{owner}: ray_start_args must be a list of options, got a single string"
            )
        for arg in self.ray_start_args:
            if not isinstance(arg, str) or not _START_ARG_RE.match(arg) or "\n" in arg:
                raise ConfigError(
                    f"{owner}: ray start argument {arg!r} must be one --option or --option=value, "
                    'e.g. "--object-store-memory=2000000000"'
                )
            if arg.split("=", 1)[0] in RESERVED_START_ARGS:
                raise ConfigError(
                    f"{owner}: ray start argument {arg!r} is set by the launcher itself "
                    f"({', '.join(RESERVED_START_ARGS)})"
                )
        check_srun_options(
            owner,
            self.srun_options,
            reserved=("--nodes", "-N", "--ntasks", "-n", "--ntasks-per-node", "--exclude", "-x"),
        )

    def render(self, request: LaunchRequest) -> str:
        stop = STOP_FUNCTION.format(poll=f"{STOP_POLL_S:g}")
        ticks = max(1, round(self.stop_grace_s / STOP_POLL_S))
        worker_ticks = round(
            (self.stop_grace_s + STOP_FILE_POLL_S + WORKER_STOP_MARGIN_S) / STOP_POLL_S
        )
        extra = "".join(f"{quote_all([a])} " for a in self.ray_start_args)
        worker = WORKER.format(
            stop=stop,
            keep_logs=KEEP_LOGS_FUNCTION,
            extra=extra,
            stop_file=STOP_FILE,
            ticks=ticks,
            poll=f"{STOP_FILE_POLL_S:g}",
            node_ip=self._node_ip("dhpc_ip", "dhpc_args") if self.node_ip_command else "",
        )
        if self.node_ip_command:
            head_ip = self._node_ip("dhpc_head_ip", "dhpc_head_args")
        else:
            head_ip = (
                "dhpc_head_ip=$dhpc_head  # Ray picks the node IP; workers resolve the head's name"
            )
        traps = "\n".join(f"trap 'dhpc_on_signal {sig}' {sig}" for sig in FORWARDED_SIGNALS)
        srun = quote_all(
            [
                "srun",
                "--unbuffered",
                "--kill-on-bad-exit=1",
                "--ntasks-per-node=1",
                *self.srun_options,
            ]
        )
        return self._header() + BODY.format(
            python=quote_all([request.python]),
            ray=quote_all([self.ray]),
            stop=stop,
            keep_logs=KEEP_LOGS_FUNCTION,
            ticks=ticks,
            worker_ticks=worker_ticks,
            traps=traps,
            head_ip=head_ip,
            free_port=quote_all([FREE_PORT_SNIPPET]),
            extra=extra,
            srun=srun,
            worker=quote_all([worker]),
            join_wait=quote_all(
                [JOIN_WAIT.replace("POLL", f"{JOIN_POLL_S:g}").replace("STARTED", RAY_STARTED_LINE)]
            ),
            join_timeout=f"{self.join_timeout_s:g}",
            exit_not_up=EXIT_RAY_NOT_UP,
            stop_file=STOP_FILE,
            temp_max=RAY_TEMP_ROOT_MAX,
            command=payload_command(request),
        )

    def _node_ip(self, var: str, args: str) -> str:
        """Shell lines: run node_ip_command, fail clearly when it prints nothing."""
        q = quote_all([self.node_ip_command or ""])
        return (
            f"{var}=$(bash -c {q} | head -n 1)\n"
            f'if [ -z "${var}" ]; then echo "dagster-hpc: node_ip_command printed no IP on $(hostname): "{q} >&2; '
            f"exit {EXIT_RAY_NOT_UP}; fi\n"
            f'{args}+=("--node-ip-address=${var}")'
        )
