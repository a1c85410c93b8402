"""Pure text for Slurm mode: the #SBATCH header, the activation wrapper, the preflight check.

Everything here is a function of its inputs (golden-tested in tests/unit/test_slurm_script.py)
and quotes every value with ``shlex.quote``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from dagster_hpc.backends.slurm_nodes import NODES_PREFLIGHT, check_partition_nodes
from dagster_hpc.errors import ConfigError
from dagster_hpc.launchers import Launcher
from dagster_hpc.launchers.base import LaunchRequest
from dagster_hpc.queue import QueueConfig, parse_mem_mb, parse_time_limit
from dagster_hpc.rundir import SLURM_LOG

# Exit code of launch.sh when the activation script cannot be sourced (outside 0-3 and 126-255).
EXIT_ACTIVATE_FAILED = 95
_JOB_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")
JOB_NAME_MAX = 64


def job_name(step: str) -> str:
    """A Slurm-safe job name for a Dagster step ("dhpc-" prefix: easy to find in squeue)."""
    return ("dhpc-" + _JOB_NAME_RE.sub("_", step))[:JOB_NAME_MAX]


# A request that says either way (QueueConfig(requeue=...), extra_directives=["--requeue"])
# keeps its word; one that says nothing is not requeued.
REQUEUE_WORD = "requeue"
NO_REQUEUE_DIRECTIVE = "--no-requeue"


def sbatch_header(queue: QueueConfig, *, step: str) -> tuple[str, ...]:
    """All #SBATCH lines: our own (name, Slurm's log) first, then the resource request.

    sbatch runs inside the run directory, so the job's working directory and the relative
    ``--output`` both land there. ``--no-requeue`` unless the request says otherwise
    (``QueueConfig(requeue=True)``): Slurm requeues a batch job whose node fails (JobRequeue=1
    is its default) and the payload would run a second time behind the step, its messages after
    the first run's; without it the job ends NODE_FAIL and the step says so.
    """
    lines = queue.to_sbatch_lines()
    own = [
        f"#SBATCH --job-name={shlex.quote(job_name(step))}",
        f"#SBATCH --output={SLURM_LOG}",
    ]
    return (*own, *no_requeue_lines(lines), *lines)


def no_requeue_lines(lines: Sequence[str]) -> list[str]:
    """``#SBATCH --no-requeue`` unless the request's ``lines`` say either way: the rule of
    ``sbatch_header``, for the array, hetjob and session headers too (a requeued array task or
    hetjob would rerun its payload behind the step; a requeued session allocation would start
    a second agent in the same session directory)."""
    if any(REQUEUE_WORD in line for line in lines):
        return []
    return [f"#SBATCH {NO_REQUEUE_DIRECTIVE}"]


@dataclass(frozen=True)
class ActivatedLauncher(Launcher):
    """Wraps a launcher: sources a cluster-side activation script before the payload starts."""

    inner: Launcher
    activate: str
    name: ClassVar[str] = "activated"

    def render(self, request: LaunchRequest) -> str:
        inner = self.inner.render(request)
        q = shlex.quote(self.activate)
        return (
            "#!/usr/bin/env bash\n"
            f"# dagster-hpc: activate the cluster environment, then run the {self.inner.name} launcher\n"
            f'. {q} || {{ echo "dagster-hpc: cannot source "{q} >&2; exit {EXIT_ACTIVATE_FAILED}; }}\n'
            + inner
        )

    def check_payload(self, payload):  # type: ignore[no-untyped-def]
        self.inner.check_payload(payload)


# The submit lock (backends/slurm_submit.py, the array and session submissions) is taken with
# flock(1) on the login node: without it a re-execution could race a submission still in flight
# and submit twice, so a login node without flock is refused before anything is submitted.
FLOCK_PREFLIGHT = (
    "; if command -v flock >/dev/null 2>&1; then echo flock=ok; else echo flock=missing; fi"
)
FLOCK_MISSING_HINT = (
    "flock is not on the login node's PATH: dagster-hpc takes it around every staging + sbatch, "
    "so that a re-execution after a killed Dagster process waits for a submission still in "
    "flight instead of submitting a second job. Nothing was submitted. Install util-linux there "
    "(it provides flock) or put a directory with flock on PATH in the login shell"
)


def preflight_command(*, base_dir: str, python: str, activate: str | None) -> str:
    """ONE command that checks everything a submit needs: the base directory is writable, the
    interpreter (after activation) runs and imports dagster_pipes, and which partitions exist.
    The answer is one "key=value" line per check (``parse_preflight``)."""
    qb = shlex.quote(base_dir)
    act = f". {shlex.quote(activate)} >/dev/null 2>&1 && " if activate else ""
    act_check = (
        f"if [ -r {shlex.quote(activate)} ]; then echo activate=ok; else echo activate=missing; fi; "
        if activate
        else ""
    )
    py = shlex.quote(python)
    return (
        f"umask 077; if mkdir -p {qb} 2>/dev/null && [ -w {qb} ]; then echo base=ok; else echo base=unwritable; fi; "
        + act_check
        + f"if ( {act}{py} -c 'import dagster_pipes' ) >/dev/null 2>&1; then echo python=ok; "
        f"elif ( {act}command -v {py} ) >/dev/null 2>&1; then echo python=no-dagster-pipes; "
        "else echo python=missing; fi; "
        "echo partitions=$(sinfo --noheader --format=%R 2>/dev/null | sort -u | tr '\\n' ','); "
        "echo default_partition=$(sinfo --noheader --format=%P 2>/dev/null | grep '\\*$' | tr -d '*' | head -n1); "
        # per partition: max time, memory (MB) and CPUs of its nodes (one line per node group)
        "echo limits=$(sinfo --noheader --format='%R;%l;%m;%c' 2>/dev/null | sort -u | tr '\\n' ','); "
        # the site's MaxArraySize: arrays are split into chunks of at most this many tasks
        "echo max_array_size=$(scontrol show config 2>/dev/null | sed -n 's/^MaxArraySize *= *//p'); "
        # generic resources (GPUs) per partition: --gpus is checked against the partition
        "echo gres=$(sinfo --noheader --format='%R;%G' 2>/dev/null | sort -u | tr '\\n' ','); "
        + NODES_PREFLIGHT
        + FLOCK_PREFLIGHT
    )


def parse_preflight(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def check_preflight(
    answer: dict[str, str],
    *,
    cluster: str,
    base_dir: str,
    python: str,
    activate: str | None,
    partition: str | None,
    need_python: bool = True,
    queue: QueueConfig | None = None,
) -> None:
    """Raise ConfigError naming what is wrong on the cluster (before anything is submitted)."""
    if answer.get("base") != "ok":
        raise ConfigError(
            f"remote base directory {base_dir} on {cluster} cannot be created or is not writable: "
            "set remote_base_dir to a directory you own (e.g. on $HOME or $SCRATCH)"
        )
    if activate and answer.get("activate") != "ok":
        raise ConfigError(
            f"activation script {activate} does not exist or is not readable on {cluster}: fix activate= "
            "(a file such as /path/env/bin/activate)"
        )
    if answer.get("flock") == "missing":  # an answer without the line (a fake) says nothing
        raise ConfigError(f"{FLOCK_MISSING_HINT} (cluster {cluster})")
    py = answer.get("python") if need_python else "ok"
    if py == "missing":
        raise ConfigError(
            f"python {python!r} was not found on {cluster}"
            + (f" after sourcing {activate}" if activate else "")
            + ": set python= to an interpreter path that exists on the compute nodes"
        )
    if py == "no-dagster-pipes":
        raise ConfigError(
            f"python {python!r} on {cluster} cannot import dagster_pipes: install it there "
            "(`python -m pip install dagster-pipes`) or point python=/activate= at an environment that has it"
        )
    if py != "ok":
        raise ConfigError(f"could not verify python {python!r} on {cluster} (answer: {answer})")
    known = [p for p in answer.get("partitions", "").split(",") if p]
    if partition is not None and known and partition not in known:
        raise ConfigError(
            f"unknown partition {partition!r} on {cluster}: this cluster has {', '.join(known)}"
        )
    if queue is not None:
        from dagster_hpc.backends.slurm_gres import check_partition_gpus

        check_partition_gpus(
            answer.get("gres", ""),
            gpus_per_node=queue.gpus_per_node,
            gres_type=queue.gres_type,
            partition=partition or answer.get("default_partition") or None,
            cluster=cluster,
        )
        check_partition_nodes(
            answer.get("nodes", ""),
            nodes=queue.nodes,
            partition=partition or answer.get("default_partition") or None,
            cluster=cluster,
        )
        check_partition_limits(
            answer.get("limits", ""),
            queue,
            cluster=cluster,
            partition=partition or answer.get("default_partition") or None,
        )


def partition_limits(text: str) -> dict[str, tuple[int | None, float, int]]:
    """``sinfo '%R;%l;%m;%c'`` groups -> partition: (max seconds or None, largest node MB, most CPUs)."""
    limits: dict[str, tuple[int | None, float, int]] = {}
    for group in filter(None, text.split(",")):
        parts = group.split(";")
        if len(parts) != 4:
            continue
        name, time_text, mem_text, cpu_text = (p.strip() for p in parts)
        try:
            max_s = parse_time_limit(time_text)
        except ConfigError:
            max_s = None  # a format we do not know: do not guess a limit
        mem = float(mem_text.rstrip("+")) if mem_text.rstrip("+").isdigit() else float("inf")
        cpus = int(cpu_text.rstrip("+")) if cpu_text.rstrip("+").isdigit() else 1 << 30
        old_s, old_mem, old_cpus = limits.get(name, (max_s, 0.0, 0))
        limits[name] = (old_s, max(old_mem, mem), max(old_cpus, cpus))
    return limits


def check_partition_limits(
    text: str, queue: QueueConfig, *, cluster: str, partition: str | None
) -> None:
    """Requests no node of the partition can satisfy fail here, not in sbatch or the queue."""
    limits = partition_limits(text).get(partition or "")
    if limits is None:
        return
    max_s, node_mb, node_cpus = limits
    where = f"partition {partition!r} on {cluster}"
    wanted_s = queue.time_limit_seconds
    if max_s is not None and wanted_s is not None and wanted_s > max_s:
        raise ConfigError(
            f"time_limit={queue.time_limit!r} exceeds the {where} (MaxTime {max_s // 60} min): "
            "ask for less time or use a partition with a longer limit (see `dagster-hpc doctor`)"
        )
    cpus = queue.cpus_per_task or 1
    if cpus > node_cpus:
        raise ConfigError(
            f"cpus_per_task={cpus} but the largest node of the {where} has {node_cpus} CPUs: "
            "ask for fewer CPUs per task (spread the work over tasks/nodes instead)"
        )
    mem_mb = parse_mem_mb(queue.mem) if queue.mem else None
    if queue.mem_per_cpu:
        mem_mb = parse_mem_mb(queue.mem_per_cpu, "mem_per_cpu") * cpus
    if mem_mb is not None and mem_mb > node_mb:
        raise ConfigError(
            f"the job asks for {mem_mb:.0f} MB per node but the largest node of the {where} has "
            f'{node_mb:.0f} MB: ask for less memory (e.g. mem="{int(node_mb * 0.9)}M") or use a '
            "partition with bigger nodes"
        )
