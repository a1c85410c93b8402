"""Final Slurm states -> SlurmJobError messages that name the state, the job and a next step."""

from __future__ import annotations

import signal

from dagster_hpc.backends.base import JobState
from dagster_hpc.errors import SlurmJobError
from dagster_hpc.metrics import JobMetrics

STDERR_TAIL_LINES = 20
# Shells report "killed by signal N" as exit code 128 + N.
SIGNAL_EXIT_BASE = 128


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


_HINTS: dict[JobState, str] = {
    JobState.FAILED: "the payload exited non-zero: read the stderr tail above and the payload's logs",
    JobState.OUT_OF_MEMORY: (
        "the job used more memory than it asked for: raise QueueConfig(mem=...) or "
        "mem_per_cpu (see slurm/max_rss_mb in the metadata for the peak it reached)"
    ),
    JobState.TIMEOUT: (
        "the job hit its time limit: raise QueueConfig(time_limit=...), or use "
        'signal_before_timeout (e.g. "USR2@120") to checkpoint before the kill'
    ),
    JobState.CANCELLED: (
        "the job was cancelled (scancel by you, an admin or a dependency): check "
        "`sacct -j <id> -o JobID,State,Reason` on the cluster"
    ),
    JobState.NODE_FAIL: "a node of the allocation failed: retry; if it repeats, tell the site admins",
    JobState.PREEMPTED: (
        "a higher-priority job took the resources: retry, or use a QOS/partition without "
        "preemption (add --requeue via extra_directives to let Slurm requeue it)"
    ),
    JobState.UNKNOWN: "the final state could not be read: check `sacct -j <id>` on the cluster",
}


_EXHAUSTED_HINT = (
    "every attempt checkpointed and asked for more time: raise QueueConfig(max_requeues=...) or "
    "time_limit, or make each attempt do more work (the checkpoint is kept in the run directory)"
)
_REQUEUE_FAILED_HINT = (
    "the site may forbid requeue (a job_submit plugin or JobRequeue policy): ask the admins, or "
    "run without requeue=True (see docs/checkpoint-requeue.md)"
)


def final_state(
    exit_code: int | None, metrics: JobMetrics | None, scheduler_state: JobState
) -> JobState:
    """The outcome: the exit-code file is the truth for a payload that finished by itself;
    sacct (or the scheduler) explains a job that was killed before it could write one."""
    if exit_code == 0:
        return JobState.COMPLETED
    if metrics is not None:
        if metrics.over_memory:
            return JobState.OUT_OF_MEMORY
        try:
            state = JobState(metrics.state)
        except ValueError:
            state = JobState.UNKNOWN
        if state is JobState.COMPLETED and exit_code not in (None, 0):
            return JobState.FAILED  # the wrapper exits 0 but recorded the payload's failure
        if state.finished:
            return state
    if exit_code is not None:
        return JobState.FAILED
    return scheduler_state if scheduler_state.finished else JobState.UNKNOWN


def slurm_job_error(
    *,
    state: JobState,
    job_id: str,
    exit_code: int | None,
    stderr_tail: str,
    run_dir: str,
    cluster: str,
    metadata: dict | None = None,
) -> SlurmJobError:
    """The error raised for a job that did not complete."""
    from dagster_hpc.attempts import summary
    from dagster_hpc.jobscript import EXIT_REQUEUE_FAILED, EXIT_REQUEUES_EXHAUSTED

    what = state.value
    hint = _HINTS.get(state, _HINTS[JobState.UNKNOWN]).replace("<id>", job_id)
    if state is JobState.FAILED and exit_code is not None:
        what = f"FAILED with exit code {exit_code}"
        if exit_code > SIGNAL_EXIT_BASE:
            what += f" (the payload was killed by {_signal_name(exit_code - SIGNAL_EXIT_BASE)})"
    if exit_code == EXIT_REQUEUES_EXHAUSTED:
        what = "FAILED: max_requeues exceeded (the payload asked to be requeued once more)"
        hint = _EXHAUSTED_HINT
    elif exit_code == EXIT_REQUEUE_FAILED:
        what = "FAILED: the payload asked to be requeued and scontrol requeue failed"
        hint = _REQUEUE_FAILED_HINT
    attempts = summary(metadata or {})
    if attempts:
        what += f" after {attempts}"
    lines = "\n".join(stderr_tail.rstrip().splitlines()[-STDERR_TAIL_LINES:]) or "(stderr is empty)"
    return SlurmJobError(
        f"Slurm job {job_id} on {cluster} ended {what}.\n"
        f"--- stderr (last {STDERR_TAIL_LINES} lines) ---\n{lines}\n"
        f"{_metrics_line(metadata or {})}run directory: {run_dir}\nhint: {hint}",
        state=state.value,
        job_id=job_id,
        exit_code=exit_code,
        metadata=metadata,
        run_dir=run_dir,
    )


# The numbers a failure message quotes (all of them are in the step's asset observation).
_QUOTED_METRICS = (
    ("slurm/elapsed_s", "elapsed {} s"),
    ("slurm/node_list", "on {}"),
    ("slurm/max_rss_mb", "MaxRSS {} MB"),
    ("slurm/cpu_efficiency_pct", "CPU efficiency {}%"),
)


def _metrics_line(metadata: dict) -> str:
    """The line "metrics: elapsed 3 s, on node1, ..." from sacct's record, or nothing without one."""
    parts = []
    for key, text in _QUOTED_METRICS:
        value = metadata.get(key)
        value = getattr(value, "value", value)
        if value not in (None, ""):
            parts.append(text.format(value))
    return f"metrics: {', '.join(parts)} (slurm/* metadata)\n" if parts else ""
