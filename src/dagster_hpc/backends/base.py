"""Where a job runs. ``ComputeResource.run`` drives every backend through this interface.

The flow is identical for all backends (so local runs catch the bugs Slurm runs would):

1. ``prepare``: the facade renders the job script (a pure function of the request) and writes
   the run directory locally (job script, payload, Pipes context, extra files, env file).
2. ``submit``: the backend ships the run directory (one round trip) and starts it; returns a
   ``JobHandle`` that is recorded in the Dagster run before any waiting.
3. ``poll``: cheap status (the machine-wide shared poller for Slurm). The job's own exit-code
   file in the run directory is the truth about the outcome.
4. Pipes messages, stdout and stderr are files in the run directory, tailed by byte offset
   through ``backend.transport`` (LocalTransport for local mode).
5. ``cancel`` on Dagster termination; ``outcome`` for metrics (also on failure).
"""

from __future__ import annotations

import abc
import shlex
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from dagster_hpc.errors import PayloadError

# Run-directory names live in the leaf module ``rundir``; re-exported here for older imports.
from dagster_hpc.rundir import (  # noqa: E402,F401
    ENV_FILE,
    EXIT_CODE,
    JOB_SCRIPT,
    LAUNCH_SCRIPT,
    MIN_RUN_DIR_DEPTH,
    PIPES_CONTEXT,
    PIPES_MESSAGES,
    STDERR,
    STDOUT,
    WRAPPER_LOG,
    check_removable,
)
from dagster_hpc.transport.base import Transport


class JobState(str, Enum):  # noqa: UP042 - str() must stay the plain value on 3.11
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    UNKNOWN = "UNKNOWN"  # the scheduler does not know (yet / any more): keep waiting, never cancel

    @property
    def finished(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING, JobState.UNKNOWN)


@dataclass(frozen=True)
class JobHandle:
    """Everything needed to find a job again (reattach after a Dagster restart)."""

    backend: str  # "local" | "slurm"
    job_id: str  # pid for local, Slurm job id for slurm
    run_dir: str  # absolute path on the machine where the job runs
    cluster: str = "local"  # user@host:port for slurm

    def to_dict(self) -> dict[str, str]:
        return {
            "backend": self.backend,
            "job_id": self.job_id,
            "run_dir": self.run_dir,
            "cluster": self.cluster,
        }

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> JobHandle:
        return cls(**{k: d[k] for k in ("backend", "job_id", "run_dir", "cluster")})


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    reason: str = ""  # e.g. Slurm's pending reason (Priority, Resources, ...)
    expected_start: str = ""  # when Slurm knows it
    exit_code: int | None = None


@dataclass
class JobOutcome:
    state: JobState
    exit_code: int | None
    metadata: dict[str, Any] = field(default_factory=dict)  # metrics -> Dagster metadata


class Backend(abc.ABC):
    """One place a job can run. Instances are per ``run()`` call (runtime state lives here,
    never on the immutable Dagster resource)."""

    name: str
    # Named waits (backends override with their own reasons): how often the Pipes reader reads
    # the run dir (one round trip per tick), how often ``poll`` is called, and how long to wait
    # for the exit_code file after the scheduler says the job finished (shared filesystems lag).
    tail_interval_s: float = 0.5
    poll_interval_s: float = 1.0
    exit_file_grace_s: float = 10.0
    # Interpreter for Python payloads when neither the launcher nor the resource names one.
    default_python: str = "python3"

    def local_staging_dir(self, run_dir: str) -> Path | None:
        """Where the facade writes the run directory before ``submit``.

        None (the default) means "a fresh local temporary directory that ``submit`` ships to
        ``run_dir``"; the local backend returns ``run_dir`` itself (nothing to ship).
        """
        return None

    def prepare(self, context: Any, request: Any) -> tuple[Any, tuple[str, ...]]:
        """Backend checks before anything is written or submitted (raise ConfigError), and the
        job-script header lines (Slurm: ``#SBATCH``). Returns the request to run (a backend may
        wrap its launcher) and the header; the default changes nothing."""
        return request, ()

    def job_ended(self, handle: JobHandle, exit_code: int | None) -> None:  # noqa: B027 - optional hook
        """Called as soon as the job is seen to end, before the final log drain and ``outcome``:
        a backend may start slow work (Slurm: the sacct query) so it overlaps the drain."""

    def find_reattach(self, context: Any) -> Any:
        """A ``ReattachDecision`` (backends/slurm_reattach) when an earlier attempt of this step
        launched a job, else None. The default never reattaches: a local job dies with the
        Dagster process that started it (its own process group is a child of that process)."""
        return None

    def remove_run_dir(self, run_dir: str) -> None:
        """Delete one run directory (retention, after its messages were read): one round trip."""
        check_removable(run_dir)
        self.transport.check(f"rm -rf -- {shlex.quote(run_dir)}", hint=f"remove {run_dir} by hand")

    def failure_error(
        self, handle: JobHandle, outcome: JobOutcome, stderr_tail: list[str]
    ) -> PayloadError:
        """The error raised when a job did not succeed (backends name their own states)."""
        code = (
            "unknown (no exit_code file)" if outcome.exit_code is None else str(outcome.exit_code)
        )
        tail = "\n".join(stderr_tail) or "(stderr was empty)"
        return PayloadError(
            f"payload failed: state {outcome.state.value}, exit code {code}, {self.name} job {handle.job_id}\n"
            f"--- stderr (last {len(stderr_tail)} lines) ---\n{tail}\n"
            f"hint: the payload's full output is in {handle.run_dir}/{STDOUT} and {handle.run_dir}/{STDERR}",
            exit_code=outcome.exit_code,
            job_id=handle.job_id,
            run_dir=handle.run_dir,
        )

    @property
    @abc.abstractmethod
    def transport(self) -> Transport:
        """How the run directory is reached (LocalTransport for local mode)."""

    @abc.abstractmethod
    def run_dir_for(self, run_id: str, step: str) -> str:
        """Absolute run-directory path (on the execution side) for this Dagster run and step."""

    @abc.abstractmethod
    def submit(self, local_run_dir: str, remote_run_dir: str) -> JobHandle:
        """Ship ``local_run_dir`` to ``remote_run_dir`` (if they differ) and start ``job.sh``."""

    @abc.abstractmethod
    def poll(self, handle: JobHandle) -> JobStatus:
        """Current status. Transient failures return UNKNOWN, never a finished state."""

    @abc.abstractmethod
    def cancel(self, handle: JobHandle) -> None:
        """Stop the job and confirm it stopped."""

    @abc.abstractmethod
    def outcome(self, handle: JobHandle, exit_code: int | None) -> JobOutcome:
        """Final state + metrics (sacct for Slurm), for success AND failure."""
