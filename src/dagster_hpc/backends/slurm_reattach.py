"""Reattach after a Dagster restart: find the Slurm job an earlier attempt of this step submitted.

A killed Dagster process (crash, deploy, OOM of the run worker) is not a cancellation: the job
keeps running. When the step runs again (a step retry in the same run, or a re-execution "from
failure" of its run), the launch handle recorded right after ``sbatch`` leads back to the job.
One round trip asks Slurm about it and looks at its run directory; ``decide`` (pure) turns that
answer into "reattach" or "submit a new job, because ...". Never a second sbatch for a job that
is still queued, running or finished successfully; and never a guess when Slurm cannot be asked.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass

from dagster_hpc.backends.base import EXIT_CODE, JobHandle, JobState, ReattachDecision
from dagster_hpc.backends.slurm_poller import slurm_state
from dagster_hpc.backends.slurm_submit import SUBMIT_LOCK
from dagster_hpc.errors import SubmissionError
from dagster_hpc.transport.base import Transport

# The probe is one squeue plus two file tests on the login node: seconds at most, even when
# slurmctld is busy.
PROBE_TIMEOUT_S = 60.0
_SQUEUE_RC = "#squeue_rc="
_EXIT = "#exit="
_DIR = "#dir=yes"
# How long the workdir probe waits for a submission still in flight (the submit lock): staging
# plus sbatch (SUBMIT_TIMEOUT_S in slurm.py); past it the answer is UNKNOWN, never a guess.
SUBMIT_LOCK_WAIT_S = 120
_LOCK_RC = "#lock_rc="
# squeue's answer for a job id slurmctld no longer remembers (MinJobAge passed): the job is gone.
_GONE_MARKERS = ("Invalid job id",)


@dataclass(frozen=True)
class JobProbe:
    """What the login node says about an earlier job (one round trip)."""

    state: JobState | None  # None: Slurm no longer knows the job
    exit_code: int | None  # from the job's own exit_code file (None: no such file)
    run_dir_exists: bool
    squeue_error: str = ""  # non-empty: squeue failed for another reason (we cannot tell)


def probe_command(handle: JobHandle) -> str:
    """squeue for the job + its exit_code file + whether the run dir exists, in one shell."""
    job = shlex.quote(handle.job_id)
    run_dir = shlex.quote(handle.run_dir)
    exit_file = shlex.quote(f"{handle.run_dir}/{EXIT_CODE}")
    return (
        f"out=$(squeue --noheader --states=all --jobs {job} --format=%T 2>&1); "
        f'echo "{_SQUEUE_RC}$?"; echo "$out"; '
        f'if [ -f {exit_file} ]; then echo "{_EXIT}$(cat {exit_file})"; fi; '
        f"if [ -d {run_dir} ]; then echo '{_DIR}'; fi"
    )


def parse_probe(stdout: str) -> JobProbe:
    squeue_rc: int | None = None
    squeue_lines: list[str] = []
    exit_code: int | None = None
    run_dir_exists = False
    for raw in stdout.splitlines():
        line = raw.strip()
        if line.startswith(_SQUEUE_RC):
            squeue_rc = int(line[len(_SQUEUE_RC) :] or "1")
        elif line.startswith(_EXIT):
            text = line[len(_EXIT) :].strip()
            exit_code = int(text) if text.lstrip("-").isdigit() else None
        elif line == _DIR:
            run_dir_exists = True
        elif line:
            squeue_lines.append(line)
    text = "\n".join(squeue_lines)
    if squeue_rc is None:
        return JobProbe(
            None,
            exit_code,
            run_dir_exists,
            squeue_error=f"no answer from the probe: {stdout[:200]!r}",
        )
    if squeue_rc != 0:
        if any(marker in text for marker in _GONE_MARKERS):
            return JobProbe(None, exit_code, run_dir_exists)
        return JobProbe(
            None, exit_code, run_dir_exists, squeue_error=text or f"squeue exited {squeue_rc}"
        )
    state = slurm_state(squeue_lines[0]) if squeue_lines else None
    return JobProbe(state, exit_code, run_dir_exists)


def decide(handle: JobHandle, probe: JobProbe, *, where: str = "") -> ReattachDecision:
    """Reattach to a job that is queued, running or finished with exit code 0; otherwise say why
    a new job is submitted. A job that failed is run again: that is what a retry is for.

    ``where`` names what is reattached to in the messages (default: the Slurm job)."""
    where = where or f"Slurm job {handle.job_id} (run dir {handle.run_dir})"
    if probe.exit_code == 0:
        return ReattachDecision(
            True, handle, f"reattaching to {where}: it already finished with exit code 0"
        )
    if probe.exit_code is not None:
        return ReattachDecision(
            False, handle,
            f"not reattaching to {where}: it ended with exit code {probe.exit_code}; submitting a new job "
            "(a retry runs the payload again)",
        )  # fmt: skip
    if probe.state in (JobState.PENDING, JobState.RUNNING, JobState.UNKNOWN):
        # UNKNOWN: a state word we do not map, but Slurm still knows the job: never submit twice
        return ReattachDecision(True, handle, f"reattaching to {where}: it is {probe.state.value}")
    if probe.squeue_error:
        raise SubmissionError(
            f"cannot tell whether {where}, submitted by an earlier attempt of this step, still runs: "
            f"squeue failed: {probe.squeue_error}\nNothing was submitted (a second job would run the "
            f"payload twice). Retry when squeue works, or check `squeue -j {handle.job_id}` and set "
            "SlurmResource(reattach=False) to submit anyway."
        )
    if not probe.run_dir_exists:
        known = (
            "Slurm no longer knows it" if probe.state is None else f"it ended {probe.state.value}"
        )
        why = f"{known} and its run directory is gone (removed after success by keep_run_dirs, or purged?)"
    elif probe.state is None:
        why = "Slurm no longer knows it and it left no exit_code file (killed before the wrapper finished)"
    else:
        why = f"it ended {probe.state.value} without an exit_code file"
    return ReattachDecision(
        False, handle, f"not reattaching to {where}: {why}; submitting a new job"
    )


def workdir_probe_command(run_dir: str) -> str:
    """Wait for the run dir's submit lock (a submission in flight), then list our jobs with
    their working directories: squeue (all states), then sacct when squeue does not have it
    (MinJobAge passed). One round trip."""
    q = shlex.quote(run_dir.rstrip("/"))
    lock = shlex.quote(f"{run_dir.rstrip('/')}/{SUBMIT_LOCK}")
    return (
        f"if [ -e {lock} ] && command -v flock >/dev/null; then "
        f'flock -w {SUBMIT_LOCK_WAIT_S} {lock} true; echo "{_LOCK_RC}$?"; fi; '
        f"if [ -d {q} ]; then echo '{_DIR}'; fi; "
        "out=$(squeue --me --noheader --states=all --format='%i|%Z' 2>&1); "
        f'echo "{_SQUEUE_RC}$?"; echo "$out"; '
        f"printf '%s\\n' \"$out\" | D={q} awk -F'|' "
        '\'$2 == ENVIRON["D"] || $2 == ENVIRON["D"] "/" {f = 1} END {exit !f}\' || '
        "sacct -X -n -P --starttime now-7days --format=JobID,WorkDir 2>/dev/null"
    )


@dataclass(frozen=True)
class WorkdirProbe:
    job_id: str | None  # the job working in the run dir, if any
    run_dir_exists: bool
    error: str = ""  # non-empty: we cannot tell (squeue failed, the lock was not released)


def parse_workdir_probe(stdout: str, run_dir: str) -> WorkdirProbe:
    want = run_dir.rstrip("/")
    job_id, exists, squeue_rc, lock_rc = None, False, None, 0
    for raw in stdout.splitlines():
        line = raw.strip()
        if line == _DIR:
            exists = True
        elif line.startswith(_LOCK_RC):
            lock_rc = int(line[len(_LOCK_RC) :] or "1")
        elif line.startswith(_SQUEUE_RC):
            squeue_rc = int(line[len(_SQUEUE_RC) :] or "1")
        elif "|" in line:
            jid, _, workdir = line.partition("|")
            if workdir.rstrip("/") == want and jid.isdigit():
                job_id = jid
    if job_id is not None:
        return WorkdirProbe(job_id, exists)
    if lock_rc != 0:
        return WorkdirProbe(
            None, exists, f"a submission into it still holds its lock after {SUBMIT_LOCK_WAIT_S} s"
        )
    if squeue_rc != 0:
        return WorkdirProbe(None, exists, f"squeue failed: {stdout.strip()[-300:]}")
    return WorkdirProbe(None, exists)


def resolve_intent(transport: Transport, handle: JobHandle) -> tuple[JobHandle | None, str]:
    """The job an attempt killed during staging or sbatch submitted (found by its working
    directory), or None with the reason none exists. UNKNOWN raises: nothing is submitted."""
    found = parse_workdir_probe(
        transport.run(
            workdir_probe_command(handle.run_dir), timeout=PROBE_TIMEOUT_S + SUBMIT_LOCK_WAIT_S
        ).stdout,
        handle.run_dir,
    )
    if found.job_id is not None:
        return dataclasses.replace(handle, job_id=found.job_id), ""
    if found.error:
        raise SubmissionError(
            f"an earlier attempt of this step was stopped while staging or submitting {handle.run_dir} "
            f"and it is UNKNOWN whether a job was queued: {found.error}. Nothing was submitted (a "
            "second job would run the payload twice). Retry later, or look for that working directory "
            "in `squeue --me -o '%i %Z'` and set SlurmResource(reattach=False) to submit anyway.",
            run_dir=handle.run_dir,
        )
    partial = " (its partly staged run directory is removed)" if found.run_dir_exists else ""
    return None, (
        f"not reattaching: an earlier attempt of this step was stopped while staging or submitting "
        f"{handle.run_dir} and no job works there (checked after that submission ended): it never "
        f"became a job{partial}; submitting a new job"
    )


def probe(transport: Transport, handle: JobHandle) -> JobProbe:
    """Ask the login node about ``handle`` (one round trip); transport errors surface."""
    result = transport.run(probe_command(handle), timeout=PROBE_TIMEOUT_S)
    return parse_probe(result.stdout)


def find_reattach(
    context: object, transport: Transport, *, cluster: str, record: bool
) -> ReattachDecision | None:
    """The decision for this step, or None when no earlier attempt launched a job."""
    from dagster_hpc import _dagster_adapter

    handle = _dagster_adapter.latest_launch(context)
    if handle is None:
        return None
    if handle.backend != "slurm" or handle.cluster != cluster:
        return ReattachDecision(
            False, handle,
            f"not reattaching to {handle.backend} job {handle.job_id} on {handle.cluster}: this step now "
            f"runs on {cluster}; submitting a new job",
        )  # fmt: skip
    intent = not handle.job_id  # recorded before staging; the attempt died before sbatch answered
    if intent:
        found, why = resolve_intent(transport, handle)
        if found is None:
            _remove_partial(transport, handle.run_dir)
            return ReattachDecision(False, handle, why)
        handle = found
    decision = decide(handle, probe(transport, handle))
    if intent and decision.reattach:
        decision = dataclasses.replace(
            decision, message=decision.message + " (found by its working directory: the attempt "
            "that submitted it was stopped before sbatch answered)"
        )  # fmt: skip
    if decision.reattach and record:
        if intent:
            _dagster_adapter.record_launch(context, handle)  # the real handle, for later retries
        else:
            _dagster_adapter.record_reattach(context)  # the freshest handle lives in this run too
    return decision


def _remove_partial(transport: Transport, run_dir: str) -> None:
    """A staged run directory no job uses (it holds the 0600 env file): removed."""
    from dagster_hpc.backends.base import check_removable

    check_removable(run_dir)
    transport.run(f"rm -rf -- {shlex.quote(run_dir)}", timeout=PROBE_TIMEOUT_S)
