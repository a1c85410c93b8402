"""srun / MPI: the payload as one parallel step of the allocation (one process per task)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from dagster_hpc.errors import ConfigError
from dagster_hpc.launchers.base import Launcher, LaunchRequest, quote_all
from dagster_hpc.launchers.command import (
    check_count,
    check_mpi,
    check_srun_options,
    payload_command,
)

LOCAL_MODES = ("tasks", "mpirun")

_LOCAL_TASKS = """\
# no Slurm allocation (local mode): start the tasks here, each with the SLURM_* variables srun sets
dhpc_ntasks={ntasks}
dhpc_pids=()
dhpc_forward() {{ kill -s "$1" "${{dhpc_pids[@]}}" 2>/dev/null || true; }}
{traps}
for ((dhpc_i = 0; dhpc_i < dhpc_ntasks; dhpc_i++)); do
  {env} {command} &
  dhpc_pids+=("$!")
done
dhpc_rc=0
dhpc_left=$dhpc_ntasks
while [ "$dhpc_left" -gt 0 ]; do
  dhpc_done=""
  wait -n -p dhpc_done
  dhpc_st=$?
  if [ -z "$dhpc_done" ]; then
    # a forwarded signal interrupted the wait (127: no task left to wait for)
    [ "$dhpc_st" -eq 127 ] && break
    continue
  fi
  dhpc_left=$((dhpc_left - 1))
  if [ "$dhpc_st" -ne 0 ] && [ "$dhpc_rc" -eq 0 ]; then
    # like srun --kill-on-bad-exit=1: the first failed task ends the others
    dhpc_rc=$dhpc_st
    dhpc_forward TERM
  fi
done
exit "$dhpc_rc"
"""
FORWARDED_SIGNALS = ("TERM", "INT", "USR1", "USR2")


@dataclass(frozen=True)
class SrunLauncher(Launcher):
    """Run the payload as one ``srun`` step: every task runs the same command (SPMD / MPI).

    In a Slurm job: ``srun --unbuffered --kill-on-bad-exit=1`` (log lines arrive as printed;
    one failed rank ends the step instead of leaving the others hanging in a collective),
    ``--mpi=`` when ``mpi`` is set. ``ntasks`` / ``ntasks_per_node`` / ``cpus_per_task`` left
    at None inherit the allocation (QueueConfig); ``cpus_per_task`` is passed on explicitly
    from ``SLURM_CPUS_PER_TASK`` because srun 22.05-23.02 no longer reads it.

    Without a Slurm allocation (no ``SLURM_JOB_ID``: local mode on a laptop or in CI) the same
    asset still runs: ``local="tasks"`` (default) starts ``ntasks`` (or ``ntasks_per_node``,
    else 1) copies of the payload on this machine, each with ``SLURM_PROCID``,
    ``SLURM_LOCALID``, ``SLURM_NODEID=0`` and ``SLURM_NTASKS`` set as srun would; the first
    failing task ends the others (needs bash >= 5.1). ``local="mpirun"`` runs
    ``mpirun -np N`` instead, for payloads that need a real MPI communicator.

    Only rank 0 should open Dagster Pipes (check ``SLURM_PROCID``): every rank shares the run
    directory's message file.
    """

    ntasks: int | None = None
    ntasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mpi: str | None = None  # srun --mpi= plugin type, e.g. "pmix"
    srun_options: tuple[str, ...] = ()
    local: Literal["tasks", "mpirun"] = "tasks"
    mpirun: str = "mpirun"
    name: ClassVar[str] = "srun"

    def __post_init__(self) -> None:
        owner = "SrunLauncher"
        for field in ("ntasks", "ntasks_per_node", "cpus_per_task"):
            check_count(owner, field, getattr(self, field))
        check_mpi(owner, self.mpi)
        if self.local not in LOCAL_MODES:
            raise ConfigError(
                f'{owner}: local={self.local!r} is not a local mode: use "tasks" (run the tasks '
                'directly) or "mpirun" (mpirun -np N)'
            )
        if not isinstance(self.mpirun, str) or not self.mpirun:
            raise ConfigError(
                f"{owner}: mpirun={self.mpirun!r} must be the mpirun command or its path"
            )
        check_srun_options(
            owner,
            self.srun_options,
            reserved=("--ntasks", "-n", "--ntasks-per-node", "--cpus-per-task", "-c"),
        )

    def render(self, request: LaunchRequest) -> str:
        command = payload_command(request)
        return (
            self._header()
            + 'if [ -n "${SLURM_JOB_ID:-}" ]; then\n'
            + self._slurm_branch(command)
            + "fi\n"
            + self._local_branch(command)
        )

    def srun_words(self) -> list[str]:
        """The srun command and its fixed options (before the per-job additions)."""
        words = ["srun", "--unbuffered", "--kill-on-bad-exit=1"]
        if self.mpi is not None:
            words.append(f"--mpi={self.mpi}")
        for field, option in (
            ("ntasks", "--ntasks"),
            ("ntasks_per_node", "--ntasks-per-node"),
            ("cpus_per_task", "--cpus-per-task"),
        ):
            value = getattr(self, field)
            if value is not None:
                words.append(f"{option}={value}")
        return [*words, *self.srun_options]

    def _slurm_branch(self, command: str) -> str:
        lines = [f"  dhpc_srun=({quote_all(self.srun_words())})"]
        if self.cpus_per_task is None:
            lines.append("  # srun 22.05-23.02 ignores the job's SLURM_CPUS_PER_TASK: pass it on")
            lines.append(
                '  if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then '
                'dhpc_srun+=("--cpus-per-task=$SLURM_CPUS_PER_TASK"); fi'
            )
        lines.append(f'  exec "${{dhpc_srun[@]}}" -- {command}')
        return "".join(line + "\n" for line in lines)

    def local_ntasks(self) -> int:
        return self.ntasks or self.ntasks_per_node or 1

    def _local_branch(self, command: str) -> str:
        n = self.local_ntasks()
        if self.local == "mpirun":
            return (
                "# no Slurm allocation (local mode): mpirun starts the ranks on this machine\n"
                f"exec {quote_all([self.mpirun])} -np {n} {command}\n"
            )
        if n == 1:
            return (
                "# no Slurm allocation (local mode): the single task runs here, as srun would start it\n"
                f"SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0 SLURM_NTASKS=1 exec {command}\n"
            )
        env = (
            'SLURM_PROCID="$dhpc_i" SLURM_LOCALID="$dhpc_i" SLURM_NODEID=0 '
            'SLURM_NTASKS="$dhpc_ntasks"'
        )
        traps = "\n".join(f"trap 'dhpc_forward {sig}' {sig}" for sig in FORWARDED_SIGNALS)
        return _LOCAL_TASKS.format(ntasks=n, env=env, command=command, traps=traps)
