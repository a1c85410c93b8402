"""Local mode: the job wrapper (the very job.sh Slurm would get) runs as a local subprocess."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from dagster_hpc.backends.base import (
    JOB_SCRIPT,
    WRAPPER_LOG,
    Backend,
    JobHandle,
    JobOutcome,
    JobState,
    JobStatus,
    check_removable,
)
from dagster_hpc.errors import CancelNotConfirmedError
from dagster_hpc.prepared import PreparedJob, StepInfo, choose_python, step_for_context
from dagster_hpc.queue import QueueConfig
from dagster_hpc.request import JobRequest
from dagster_hpc.transport.local import LocalTransport

# After SIGTERM, how long the payload gets to clean up before SIGKILL (Slurm's KillWait is 30 s;
# local runs are interactive, so shorter).
CANCEL_GRACE_S = 10.0
# How often cancel checks that every process of the job's group has exited.
GROUP_CHECK_INTERVAL_S = 0.02
_STEP_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# A local job must not outlive a Dagster process that is SIGKILLed (nobody would read its output,
# and a retry would run the payload a second time): util-linux setpriv asks the kernel to send the
# wrapper SIGTERM when its parent dies; job.sh forwards it to the payload. Without setpriv
# (not Linux) the job runs on, orphaned, as it did before.
_SETPRIV = shutil.which("setpriv")
_DIE_WITH_PARENT: tuple[str, ...] = (_SETPRIV, "--pdeathsig", "TERM", "--") if _SETPRIV else ()


def default_local_base_dir() -> Path:
    """Per-user directory for local run dirs (kept after the run for debugging)."""
    return Path(tempfile.gettempdir()) / f"dagster-hpc-{getpass.getuser()}" / "runs"


class LocalBackend(Backend):
    """Runs job.sh with bash in its own process group; the run dir is written in place."""

    name = "local"
    # Local file reads cost microseconds: tail and poll often so a trivial asset finishes fast.
    tail_interval_s = 0.01
    poll_interval_s = 0.05
    # The wrapper writes exit_code before it exits: a short grace covers a kill -9 only.
    exit_file_grace_s = 1.0
    # The interpreter running Dagster has dagster-pipes installed (it is a dependency).
    default_python = sys.executable

    def __init__(self, base_dir: str | Path | None = None, *, python: str | None = None):
        self._base_dir = Path(base_dir) if base_dir else default_local_base_dir()
        self.python = python  # ComputeResource.python
        self._transport = LocalTransport()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._started: dict[str, float] = {}

    @property
    def transport(self) -> LocalTransport:
        return self._transport

    def run_dir_for(self, run_id: str, step: str) -> str:
        # a unique suffix: a retried step must never append to the previous attempt's logs
        leaf = f"{_STEP_SAFE.sub('_', step)[:80]}-{uuid.uuid4().hex[:8]}"
        return str((self._base_dir / _STEP_SAFE.sub("_", run_id) / leaf).absolute())

    def prepare(self, step: StepInfo, request: JobRequest, *, check: bool = True) -> PreparedJob:
        """A queue request means nothing locally, but a bad one fails here too: the same asset
        must not pass in development and then fail on the cluster."""
        if not isinstance(step, StepInfo):  # the pre-PreparedJob call prepare(context, request)
            step = step_for_context(step)
        QueueConfig.from_mapping(request.queue)
        return PreparedJob(
            request, python=choose_python(resource=self.python, default=self.default_python)
        )

    def local_staging_dir(self, run_dir: str) -> Path:
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        return path

    def submit(self, local_run_dir: str, remote_run_dir: str) -> JobHandle:
        self._transport.put_tree(Path(local_run_dir), remote_run_dir)
        with open(Path(remote_run_dir) / WRAPPER_LOG, "ab") as log:
            proc = subprocess.Popen(
                [*_DIE_WITH_PARENT, "bash", f"{remote_run_dir}/{JOB_SCRIPT}"],
                cwd=remote_run_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: cancel reaches the whole tree
            )
        job_id = str(proc.pid)
        self._procs[job_id] = proc
        self._started[job_id] = time.monotonic()
        return JobHandle(backend=self.name, job_id=job_id, run_dir=remote_run_dir)

    def poll(self, handle: JobHandle) -> JobStatus:
        proc = self._procs.get(handle.job_id)
        if proc is None:
            return JobStatus(JobState.UNKNOWN, reason="not started by this process")
        code = proc.poll()
        if code is None:
            return JobStatus(JobState.RUNNING)
        return JobStatus(_state_for(code), exit_code=code)

    def cancel(self, handle: JobHandle) -> None:
        proc = self._procs.get(handle.job_id)
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=CANCEL_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=CANCEL_GRACE_S)
        # the wrapper is gone; its grandchildren may still be dying: confirm the group is empty
        if not _group_gone(proc.pid, CANCEL_GRACE_S):
            _signal_group(proc.pid, signal.SIGKILL)
        if proc.poll() is None or not _group_gone(proc.pid, CANCEL_GRACE_S):
            raise CancelNotConfirmedError(
                f"local job {handle.job_id} did not stop after SIGTERM and SIGKILL; "
                f"kill process group {proc.pid} by hand (run dir {handle.run_dir})",
                job_id=handle.job_id,
                state=JobState.RUNNING.value,
                run_dir=handle.run_dir,
            )

    def remove_run_dir(self, run_dir: str) -> None:
        """Retention: a local delete, no shell."""
        check_removable(run_dir)
        shutil.rmtree(run_dir)

    def outcome(self, handle: JobHandle, exit_code: int | None) -> JobOutcome:
        proc = self._procs.get(handle.job_id)
        code = exit_code
        if code is None and proc is not None:
            code = proc.poll()
        elapsed = time.monotonic() - self._started.get(handle.job_id, time.monotonic())
        state = JobState.UNKNOWN if code is None else _state_for(code)
        return JobOutcome(
            state=state,
            exit_code=code,
            metadata={
                "dagster_hpc/backend": self.name,
                "dagster_hpc/run_dir": handle.run_dir,
                "dagster_hpc/job_id": handle.job_id,
                "dagster_hpc/elapsed_s": round(elapsed, 3),
            },
        )


def _state_for(code: int) -> JobState:
    if code == 0:
        return JobState.COMPLETED
    if code < 0 or code in (128 + signal.SIGTERM, 128 + signal.SIGKILL):
        return JobState.CANCELLED
    return JobState.FAILED


def _group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(GROUP_CHECK_INTERVAL_S)
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # already gone: exactly what we wanted
