"""Where a job runs. ``ComputeResource.run`` drives every backend through this interface.

The flow is identical for all backends (so local runs catch the bugs Slurm runs would):

1. ``prepare(step, request)``: backend checks (raise ConfigError before anything is written)
   and every decision the scripts depend on, returned as a ``PreparedJob`` (nothing is kept on
   the backend for later: the dry run calls the same hook and prints the same scripts).
2. The flow writes the run directory locally from ``render_run_scripts(job, run_dir)``.
3. ``submit``: the backend ships the run directory (one round trip) and starts it; returns a
   ``JobHandle`` that the flow records in the Dagster run before any waiting.
4. ``poll``: cheap status (the machine-wide shared poller for Slurm). The job's own exit-code
   file in the run directory is the truth about the outcome.
5. Pipes messages, stdout and stderr are files in the run directory, tailed by byte offset
   through ``backend.transport`` (LocalTransport for local mode).
6. ``cancel`` on Dagster termination; ``outcome`` for metrics (also on failure).
"""

from __future__ import annotations

import abc
import shlex
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster_hpc.errors import PayloadError
from dagster_hpc.prepared import PreparedJob, StepInfo, choose_python
from dagster_hpc.request import JobRequest

# Run-directory names live in the leaf module ``rundir``; re-exported here for older imports.
from dagster_hpc.rundir import (  # noqa: F401
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

if TYPE_CHECKING:
    import dagster as dg

    from dagster_hpc.attempts import Attempt

    AnyContext = dg.AssetExecutionContext | dg.OpExecutionContext


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


@dataclass(frozen=True)
class ReattachDecision:
    reattach: bool
    handle: JobHandle
    message: str  # logged as is: reattaching (info) or why a new job is submitted (warning)


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
    # The first ``poll`` comes this long after the start of the wait (the Pipes reader sees a
    # job's end by itself; the scheduler query is for jobs that end without an exit code).
    first_poll_after_s: float = 0.0
    # Once ``poll`` says RUNNING, the next one comes no sooner than this (0: every tick): the
    # reader sees a normal end by itself, the query only catches a job that dies without one.
    running_poll_interval_s: float = 0.0
    # Interpreter for Python payloads when neither the launcher nor the resource names one.
    default_python: str = "python3"
    # Whether the flow records each launch in the Dagster run (so a retry can reattach).
    records_launches: bool = False

    def local_staging_dir(self, run_dir: str) -> Path | None:
        """Where the facade writes the run directory before ``submit``.

        None (the default) means "a fresh local temporary directory that ``submit`` ships to
        ``run_dir``"; the local backend returns ``run_dir`` itself (nothing to ship).
        """
        return None

    def prepare(self, step: StepInfo, request: JobRequest, *, check: bool = True) -> PreparedJob:
        """Backend checks before anything is written or submitted (raise ConfigError) and the
        decisions the scripts depend on. ``check=False`` (a dry run) skips checks that need the
        cluster but changes nothing in the result. The default: the request as is."""
        return PreparedJob(request, python=choose_python(default=self.default_python))

    def job_ended(  # noqa: B027 - optional hook
        self, handle: JobHandle, exit_code: int | None, *, remove_run_dir: bool = False
    ) -> None:
        """Called as soon as the job is seen to end, before the final log drain and ``outcome``:
        a backend may start slow work (Slurm: the sacct query) so it overlaps the drain.
        ``remove_run_dir``: the step succeeded, everything was read and retention removes the
        run dir: a backend may do it in the same round trip (then ``run_dir_removed`` is True)."""

    def run_dir_removed(self, handle: JobHandle) -> bool:
        """True when ``job_ended`` already removed the run directory (no extra round trip)."""
        return False

    def attempt_states(
        self, handle: JobHandle, attempts: list[Attempt]
    ) -> list[tuple[str, int | None]] | None:
        """The scheduler's (state, elapsed s) per attempt, when the wrapper's own records cannot
        name an attempt's end (SIGTERM, SIGKILL); None: not asked (the default)."""
        return None

    def submitting(self, context: AnyContext, run_dir: str) -> None:  # noqa: B027 - optional hook
        """Called by the flow before staging ``run_dir``: a backend whose submission can outlive
        a killed Dagster process records the intent, so a re-execution that finds no launch
        handle can still tell by the run directory whether the job was submitted."""

    def launched(self, context: AnyContext, handle: JobHandle) -> None:  # noqa: B027 - optional hook
        """Called by the flow right after ``submit``, before any waiting: a backend records
        the launch where a restarted Dagster finds it (Slurm: the run's event log)."""

    def find_reattach(self, context: AnyContext) -> ReattachDecision | None:
        """The job an earlier attempt of this step launched, when it should be waited for instead
        of submitting again (Slurm, after a Dagster restart). The default never reattaches: a
        local job dies with the Dagster process that started it."""
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
