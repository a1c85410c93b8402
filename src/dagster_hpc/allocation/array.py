"""Job arrays: many items (partitions of a single-run backfill, sweep points, shards) in ONE
step, as few ``sbatch --array`` submissions as the site allows.

The items become task directories of one multi-task run dir (``allocation.tasks``). The array
scripts (pure text, ``render_array_script``) map ``SLURM_ARRAY_TASK_ID`` to a task index through
an explicit list, so an array never needs an index >= MaxArraySize, and a rerun of items 3 and
17 is simply an array over the list ``(3 17)``. All chunk scripts are submitted in the same
round trip that unpacks the run dir; their ids go to ``arrays.txt`` in the run dir (and into
the Dagster run as the launch handle), so a re-execution finds the array, keeps the items that
succeeded and reruns only the others.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from dagster_hpc.backends.slurm_script import job_name, no_requeue_lines
from dagster_hpc.errors import ConfigError
from dagster_hpc.queue import QueueConfig

ARRAY_SCRIPT = "array.{attempt}.{chunk}.sh"
ARRAYS_FILE = "arrays.txt"  # "<job id> <attempt>.<chunk> <task index> <task index> ..." per line
# Slurm's default MaxArraySize; used when the preflight cannot read the site's value.
DEFAULT_MAX_ARRAY_SIZE = 1001
ARRAY_LOG = "slurm-%A_%a.log"
# Held by the shell that submits the chunks: a reattach waits for a submission that lost its SSH
# connection but still runs on the login node before it reads ARRAYS_FILE (nothing twice).
SUBMIT_LOCK = ".submit.lock"
SUBMIT_LOCK_WAIT_S = 120


def chunks(indices: Sequence[int], max_array_size: int) -> list[list[int]]:
    """Split task indices into arrays of at most ``max_array_size`` tasks (array index j of a
    chunk runs task chunk[j]: indices 0..len-1, always below MaxArraySize)."""
    if max_array_size < 1:
        raise ConfigError(f"MaxArraySize must be >= 1, got {max_array_size}")
    idx = list(indices)
    return [idx[i : i + max_array_size] for i in range(0, len(idx), max_array_size)]


def check_throttle(throttle: int | None) -> None:
    if throttle is not None and (not isinstance(throttle, int) or throttle < 1):
        raise ConfigError(
            f"array throttle must be a whole number >= 1 (at most that many tasks run at once), got {throttle!r}"
        )


def render_array_script(
    *,
    run_dir: str,
    tasks: Sequence[int],
    queue: QueueConfig,
    step: str,
    throttle: int | None = None,
) -> str:
    """One array submission over ``tasks`` (task indices of the run dir's ``t/`` tree)."""
    check_throttle(throttle)
    if not tasks:
        raise ConfigError("an array needs at least one task")
    spec = f"0-{len(tasks) - 1}" + (f"%{throttle}" if throttle else "")
    lines = queue.to_sbatch_lines()
    header = [
        f"#SBATCH --job-name={shlex.quote(job_name(step))}",
        f"#SBATCH --output={ARRAY_LOG}",
        f"#SBATCH --array={spec}",
        *no_requeue_lines(lines),  # a requeued task would rerun its payload behind the step
        *lines,
    ]
    task_list = " ".join(str(int(t)) for t in tasks)
    return (
        "#!/usr/bin/env bash\n"
        + "".join(line + "\n" for line in header)
        + "# dagster-hpc array: array task j runs the ordinary job wrapper of task TASKS[j], in\n"
        + "# this shell (sourced: one bash start-up less per task; it ends with the wrapper's exit)\n"
        + f"TASKS=({task_list})\n"
        + "i=${TASKS[$SLURM_ARRAY_TASK_ID]}\n"
        + f'. {shlex.quote(run_dir.rstrip("/"))}/t/"$i"/job.sh\n'
    )


def submit_command(run_dir: str, scripts: Sequence[tuple[str, Sequence[int]]]) -> str:
    """After the untar: under SUBMIT_LOCK, sbatch every chunk script, record ``<id> <script>
    <tasks>`` in ARRAYS_FILE and print the ids; stops at the first refusal (its message on
    stderr)."""
    q = shlex.quote(run_dir)
    parts = [f"cd {q}", f"exec 9>>{SUBMIT_LOCK}", f"flock -w {SUBMIT_LOCK_WAIT_S} -x 9"]
    for script, tasks in scripts:
        s = shlex.quote(script)
        task_list = " ".join(str(int(t)) for t in tasks)
        parts.append(
            f"id=$(sbatch --parsable {s}) && id=${{id%%;*}} && "
            f'echo "$id {s} {task_list}" >> {ARRAYS_FILE} && echo "$id"'
        )
    return " && ".join(parts)


def script_tasks(text: str) -> list[int] | None:
    """The task indices of a chunk script (its ``TASKS=(...)`` line), None if it has none."""
    for line in text.splitlines():
        if line.startswith("TASKS=(") and line.endswith(")"):
            words = line[len("TASKS=(") : -1].split()
            if all(w.isdigit() for w in words):
                return [int(w) for w in words]
    return None


def unrecorded_chunks(
    rows: Sequence[tuple[str, str, str]], run_dir: str, known: set[str]
) -> dict[str, str]:
    """Array job id -> chunk script path, for squeue rows ``(array job id, state, command)`` of
    jobs submitted from ``run_dir``'s chunk scripts that ARRAYS_FILE does not list (an sbatch
    answered, then the connection dropped before its line was written)."""
    prefix = run_dir.rstrip("/") + "/" + ARRAY_SCRIPT.split("{", 1)[0]
    return {
        jid: command
        for jid, _, command in rows
        if jid.isdigit() and jid not in known and command.startswith(prefix)
    }


def parse_arrays_file(text: str) -> list[tuple[str, list[int]]]:
    """ARRAYS_FILE -> [(job id, task indices in array order)]."""
    out: list[tuple[str, list[int]]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            out.append((parts[0], [int(p) for p in parts[2:] if p.isdigit()]))
    return out
