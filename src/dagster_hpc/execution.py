"""The one flow every backend goes through (template method): stage, submit, watch, finish.

``ComputeResource.run`` validates input and picks a backend; everything after that is here,
so local runs exercise exactly the path Slurm runs take.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import dagster as dg

from dagster_hpc import attempts, cancellation, step_calls
from dagster_hpc.backends.base import Backend, JobHandle, JobState, JobStatus
from dagster_hpc.jobscript import render_env_file
from dagster_hpc.pipes import RunDirContextInjector, RunDirMessageReader
from dagster_hpc.pipes.forward import LogForwarder
from dagster_hpc.pipes.reader import FORWARD_CAP_BYTES
from dagster_hpc.prepared import PreparedJob, render_run_scripts
from dagster_hpc.request import JobRequest
from dagster_hpc.retention import KEEP_ALWAYS, apply_retention, kept_metadata, should_remove
from dagster_hpc.rundir import (
    CHECKPOINT_DIR,
    CHECKPOINT_HELPER,
    ENV_FILE,
    JOB_SCRIPT,
    LAUNCH_SCRIPT,
    PIPES_CONTEXT,
)

AnyContext = dg.AssetExecutionContext | dg.OpExecutionContext


@step_calls.numbered_call  # reattach is keyed to the call, not the step
@cancellation.cooperative_step  # run termination under the concurrent executor
def execute(
    context: AnyContext,
    backend: Backend,
    job: PreparedJob | JobRequest,
    *,
    base_env: dict[str, str] | None = None,
    keep_run_dirs: str = KEEP_ALWAYS,
    python: str | None = None,
    header_lines: tuple[str, ...] = (),
    pipes: bool = True,
    forward_cap_bytes: int = FORWARD_CAP_BYTES,
) -> dg.PipesClientCompletedInvocation:
    """Run the job ``backend.prepare`` returned through Dagster Pipes; raise PayloadError on failure.

    When an earlier attempt of this step already launched a job that can be reattached (Slurm
    after a Dagster restart), nothing is staged or submitted: the reader starts at offset 0 of
    that job's run directory, so this attempt sees every message and log line.

    (A bare ``JobRequest`` with ``python``/``header_lines`` is the pre-``PreparedJob`` call and
    still works.)
    """
    if isinstance(job, JobRequest):
        job = PreparedJob(job, python=python or backend.default_python, header_lines=header_lines)
    request = job.request
    op_context = (
        context.op_execution_context if isinstance(context, dg.AssetExecutionContext) else context
    )
    handle: JobHandle | None = _reattach_handle(context, backend)
    run_dir = (
        handle.run_dir if handle else backend.run_dir_for(context.run.run_id, op_context.op.name)
    )
    staging = None if handle else backend.local_staging_dir(run_dir)
    temp_staging = staging is None
    if staging is None:
        staging = Path(tempfile.mkdtemp(prefix="dagster-hpc-stage-"))
    reader = RunDirMessageReader(
        backend.transport,
        run_dir,
        LogForwarder(context.log.info),
        interval_s=backend.tail_interval_s,
        warn=context.log.warning,
        idle_interval_s=getattr(backend, "tail_idle_interval_s", None),
        idle_after_s=getattr(backend, "tail_idle_after_s", 0.0),
        pipes=pipes,
        on_attempt=lambda line: context.log.info(f"dagster-hpc: {line}"),
        forward_cap_bytes=forward_cap_bytes,
    )
    extras = dict(request.extras)
    if job.requeue is not None:
        extras[attempts.CHECKPOINT_EXTRA] = f"{run_dir}/{CHECKPOINT_DIR}"
    injector = RunDirContextInjector(staging / PIPES_CONTEXT, f"{run_dir}/{PIPES_CONTEXT}")
    try:
        with dg.open_pipes_session(context, injector, reader, extras=extras) as session:
            env = {
                **(base_env or {}),
                **request.extra_env,
                **session.get_bootstrap_env_vars(),
                **_run_env(context, run_dir),
            }
            if handle is None:
                backend.submitting(context, run_dir)  # before anything reaches the cluster
                _write_run_dir(staging, run_dir, job, env)
                handle = backend.submit(str(staging), run_dir)
                backend.launched(context, handle)  # before any waiting (reattach, sensor)
                context.log.info(
                    f"dagster-hpc: {backend.name} job {handle.job_id} started for {request.describe()} (run dir {run_dir})"
                )
            exit_code = _wait(context, backend, handle, reader)
            if reader.capped:  # output past the forwarding cap lives only in the run dir
                keep_run_dirs = KEEP_ALWAYS
            # e.g. start fetching metrics while logs drain (and remove a finished run dir with it)
            removable = exit_code == 0 and reader.complete.is_set()
            backend.job_ended(
                handle,
                exit_code,
                remove_run_dir=removable and should_remove(keep_run_dirs, succeeded=True),
            )
    finally:
        if temp_staging:
            shutil.rmtree(staging, ignore_errors=True)
    if reader.capped:  # set by the final drain too
        keep_run_dirs = KEEP_ALWAYS
    outcome = backend.outcome(handle, exit_code)
    if job.requeue is not None or len(reader.attempts) > 1:
        outcome.metadata.update(
            attempts.attempt_metadata(
                reader.attempts, backend.attempt_states(handle, reader.attempts)
            )
        )
    if outcome.exit_code != 0:
        error = backend.failure_error(handle, outcome, list(reader.stderr_tail))
        removed = apply_retention(context, backend, handle, keep_run_dirs, succeeded=False)
        _observe_failure(
            context,
            {**kept_metadata(outcome.metadata, removed=removed), **reader.capped_metadata()},
        )
        raise error
    removed = apply_retention(context, backend, handle, keep_run_dirs, succeeded=True)
    metadata = {**kept_metadata(outcome.metadata, removed=removed), **reader.capped_metadata()}
    return dg.PipesClientCompletedInvocation(session, metadata=metadata)


def _reattach_handle(context: AnyContext, backend: Backend) -> JobHandle | None:
    """The earlier attempt's job to wait for, if the backend says so (logs the decision)."""
    decision = backend.find_reattach(context)
    if decision is None:
        return None
    if decision.reattach:
        context.log.info(f"dagster-hpc: {decision.message}")
        return decision.handle
    context.log.warning(f"dagster-hpc: {decision.message}")
    return None


def _wait(
    context: AnyContext, backend: Backend, handle: JobHandle, reader: RunDirMessageReader
) -> int | None:
    """Block until the job's exit_code file appears (or the job is gone without one)."""
    last: JobStatus | None = None
    finished_at: float | None = None
    try:
        next_poll_at = time.monotonic() + backend.first_poll_after_s
        while not reader.exited.wait(backend.poll_interval_s):
            cancellation.check_current()  # a stop request for a step on a worker thread
            if time.monotonic() < next_poll_at:
                continue
            status = backend.poll(handle)
            if status != last:
                _log_status(context, handle, status, first=last is None)
                last = status
            if status.state is JobState.RUNNING:
                next_poll_at = time.monotonic() + backend.running_poll_interval_s
            if status.state.finished:
                finished_at = finished_at or time.monotonic()
                # the grace counts from the reader's last progress: a reader still forwarding a
                # burst of output reaches the exit_code file later than squeue sees the end
                quiet_since = max(finished_at, reader.progress_at)
                if time.monotonic() - quiet_since > backend.exit_file_grace_s:
                    return None
            else:
                finished_at = None  # requeued (a preempted attempt): the job goes on
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        context.log.warning(
            f"dagster-hpc: run interrupted: cancelling {backend.name} job {handle.job_id}"
        )
        backend.cancel(handle)
        raise
    if reader.exit_code is None and reader.error is not None:
        # the reader died (e.g. Dagster rejected a reported message): the error surfaces when the
        # Pipes session closes; do not leave the job running unattended
        context.log.warning(
            f"dagster-hpc: reading the job's output failed: cancelling {backend.name} job {handle.job_id}"
        )
        backend.cancel(handle)
    return reader.exit_code


def _log_status(context: AnyContext, handle: JobHandle, status: JobStatus, *, first: bool) -> None:
    if status.state is JobState.PENDING:
        detail = f" (reason: {status.reason})" if status.reason else ""
        start = f", expected start {status.expected_start}" if status.expected_start else ""
        context.log.info(f"dagster-hpc: job {handle.job_id} is pending{detail}{start}")
    elif status.state is not JobState.UNKNOWN and not (first and status.state is JobState.RUNNING):
        # a job that runs at once needs no "running" line (a Dagster event costs milliseconds)
        context.log.debug(f"dagster-hpc: job {handle.job_id} is {status.state.value}")


def _write_run_dir(staging: Path, run_dir: str, job: PreparedJob, env: dict[str, str]) -> None:
    """The run directory, staged locally: the scripts are exactly what a dry run prints."""
    request = job.request
    for src in ((request.payload_file,) if request.payload_file else ()) + request.extra_files:
        shutil.copy2(src, staging / src.name)
    # the payload-side checkpoint helper (stdlib only): `from dagster_hpc_checkpoint import ...`
    shutil.copy2(attempts.checkpoint_helper_source(), staging / CHECKPOINT_HELPER)
    scripts = render_run_scripts(job, run_dir)
    _write(staging / ENV_FILE, render_env_file(env), 0o600)
    _write(staging / LAUNCH_SCRIPT, scripts.launch, 0o700)
    _write(staging / JOB_SCRIPT, scripts.job, 0o700)


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


def _run_env(context: AnyContext, run_dir: str) -> dict[str, str]:
    env = {"DAGSTER_HPC_RUN_ID": context.run.run_id, "DAGSTER_HPC_RUN_DIR": run_dir}
    if context.has_partition_key:
        env["DAGSTER_HPC_PARTITION_KEY"] = context.partition_key
    return env


def _observe_failure(context: AnyContext, metadata: dict) -> None:
    """Failed jobs still carry their metrics: record them as observations of the selected assets."""
    if not metadata or not context.has_assets_def:
        return
    for key in context.selected_asset_keys:
        context.log_event(dg.AssetObservation(asset_key=key, metadata=metadata))
