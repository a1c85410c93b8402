"""torchrun: one elastic PyTorch launcher per node, all rendezvousing on the allocation's first node."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import ClassVar

from dagster_hpc.errors import ConfigError
from dagster_hpc.launchers.base import Launcher, LaunchRequest, quote_all
from dagster_hpc.launchers.command import (
    FREE_PORT_SNIPPET,
    check_count,
    check_shell_command,
    check_srun_options,
)

# Exit code of launch.sh when the interpreter has no torch (outside 0-3 and 126-255; 95 is
# the activation failure, 96/97 the wrapper's own).
EXIT_NO_TORCH = 94
# Exit code of launch.sh (or of a node's torchrun task) when node_ip_command prints nothing.
EXIT_NO_NODE_IP = 92
# Per node, with node_ip_command: that node's address becomes torchrun's --local-addr (the
# address the rank-0 agent publishes as MASTER_ADDR instead of its host name).
# Arguments: $1 node_ip_command, $2 python, then torchrun's arguments.
_WITH_LOCAL_ADDR = (
    'dhpc_ip=$(bash -c "$1" | head -n 1); '
    'if [ -z "$dhpc_ip" ]; then echo "dagster-hpc: node_ip_command printed no address on $(hostname): $1" >&2; '
    f"exit {EXIT_NO_NODE_IP}; fi; "
    'exec "$2" -m torch.distributed.run --local-addr="$dhpc_ip" "${@:3}"'
)

# Whether torch is importable, without paying for the import itself (seconds on a cluster FS).
_HAS_TORCH = 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'

_BODY = """\
dhpc_py={python}
if ! "$dhpc_py" -c {has_torch}; then
  echo "dagster-hpc: TorchrunLauncher needs PyTorch in $dhpc_py (no module named torch): install torch into the job's environment" >&2
  exit {exit_no_torch}
fi
dhpc_nproc={nproc}
if [ -n "${{SLURM_JOB_ID:-}}" ]; then
  # one torchrun per node; the c10d rendezvous server runs on the allocation's first node
  dhpc_nnodes=${{SLURM_JOB_NUM_NODES:-1}}
{head}
  dhpc_port=$("$dhpc_py" -c {free_port})
  dhpc_srun=({srun} --nodes="$dhpc_nnodes" --ntasks="$dhpc_nnodes")
  if [ -n "${{SLURM_CPUS_PER_TASK:-}}" ]; then dhpc_srun+=("--cpus-per-task=$SLURM_CPUS_PER_TASK"); fi
  exec "${{dhpc_srun[@]}}" -- {per_node} \\
    --nnodes="$dhpc_nnodes" --nproc-per-node="$dhpc_nproc" \\
    --rdzv-backend=c10d --rdzv-endpoint="$dhpc_head:$dhpc_port" --rdzv-id="$SLURM_JOB_ID" \\
    {extra}{payload}
fi
# no Slurm allocation (local mode): a single-node torchrun on this machine
exec "$dhpc_py" -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node="$dhpc_nproc" \\
  {extra}{payload}
"""


@dataclass(frozen=True)
class TorchrunLauncher(Launcher):
    """Distributed PyTorch: ``torchrun`` (``python -m torch.distributed.run``) once per node.

    In a Slurm job: ``srun --ntasks-per-node=1`` starts one torchrun on every node of the
    allocation; they rendezvous (``--rdzv-backend=c10d``) on the first node of
    ``SLURM_JOB_NODELIST`` (``scontrol show hostnames``) at a port found free there, with the job
    id as rendezvous id. Where node names do not resolve, ``node_ip_command`` (a shell command
    run on each node) prints each node's address: the first node's is the rendezvous endpoint,
    every node's its ``--local-addr``. ``--nproc-per-node`` is ``nproc_per_node``, else the GPUs Slurm gave
    the node (``SLURM_GPUS_ON_NODE``), else 1. Without Slurm: a single-node ``--standalone``
    torchrun with the same process count.

    The payload must be a ``.py`` file, and torch must be installed in the job's interpreter
    (the launcher checks before starting and exits with code 94 and a message if it is not; it
    never falls back to plain python, which would silently run one process).
    """

    nproc_per_node: int | None = None
    node_ip_command: str | None = None  # shell command printing a node's address (run on each node)
    torchrun_args: tuple[str, ...] = ()  # extra torchrun options, e.g. ("--max-restarts=3",)
    srun_options: tuple[str, ...] = ()
    name: ClassVar[str] = "torchrun"

    def __post_init__(self) -> None:
        check_count("TorchrunLauncher", "nproc_per_node", self.nproc_per_node)
        check_shell_command("TorchrunLauncher", "node_ip_command", self.node_ip_command)
        check_srun_options(
            "TorchrunLauncher",
            self.srun_options,
            reserved=(
                "--nodes",
                "-N",
                "--ntasks",
                "-n",
                "--ntasks-per-node",
                "--cpus-per-task",
                "-c",
            ),
        )
        if isinstance(self.torchrun_args, str):
            raise ConfigError(
                "TorchrunLauncher: torchrun_args must be a list of options, got a single string"
            )
        reserved = (
            "--nnodes",
            "--nproc-per-node",
            "--nproc_per_node",
            "--rdzv-backend",
            "--rdzv_backend",
            "--rdzv-endpoint",
            "--rdzv_endpoint",
            "--rdzv-id",
            "--rdzv_id",
            "--standalone",
        )
        for arg in self.torchrun_args:
            if (
                not isinstance(arg, str)
                or not arg.startswith("--")
                or arg.split("=", 1)[0] in reserved
            ):
                raise ConfigError(
                    f"TorchrunLauncher: torchrun argument {arg!r} is not allowed: pass extra torchrun "
                    "options as --name=value (the launcher sets --nnodes, --nproc-per-node, --rdzv-* and "
                    "--standalone itself)"
                )

    def check_payload(self, payload: Path) -> None:
        if payload.suffix.lower() != ".py":
            raise ConfigError(
                f"TorchrunLauncher runs a Python training script, and {payload} is not a .py file: "
                "pass the .py file that torchrun should start on every process"
            )

    def render(self, request: LaunchRequest) -> str:
        if request.payload is None or PurePath(request.payload).suffix.lower() != ".py":
            raise ConfigError(
                "TorchrunLauncher runs a .py training script (payload=...), got "
                + (
                    f"payload {request.payload!r}"
                    if request.payload
                    else f"the command {list(request.argv)!r}"
                )
            )
        nproc = str(self.nproc_per_node) if self.nproc_per_node else '"${SLURM_GPUS_ON_NODE:-1}"'
        srun = quote_all(
            [
                "srun",
                "--unbuffered",
                "--kill-on-bad-exit=1",
                "--ntasks-per-node=1",
                *self.srun_options,
            ]
        )
        extra = "".join(f"{quote_all([a])} " for a in self.torchrun_args)
        payload = request.payload_ref() + (" " + quote_all(request.args) if request.args else "")
        if self.node_ip_command:
            q = quote_all([self.node_ip_command])
            head = (
                f"  dhpc_head=$(bash -c {q} | head -n 1)  # on the first node (where the batch step runs)\n"
                '  if [ -z "$dhpc_head" ]; then echo "dagster-hpc: node_ip_command printed no address: "'
                f"{q} >&2; exit {EXIT_NO_NODE_IP}; fi"
            )
            per_node = f'bash -c {quote_all([_WITH_LOCAL_ADDR])} dhpc-torchrun {q} "$dhpc_py"'
        else:
            head = '  dhpc_head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
            per_node = '"$dhpc_py" -m torch.distributed.run'
        return self._header() + _BODY.format(
            head=head,
            per_node=per_node,
            python=quote_all([request.python]),
            has_torch=quote_all([_HAS_TORCH]),
            exit_no_torch=EXIT_NO_TORCH,
            nproc=nproc,
            free_port=quote_all([FREE_PORT_SNIPPET]),
            srun=srun,
            extra=extra,
            payload=payload,
        )
