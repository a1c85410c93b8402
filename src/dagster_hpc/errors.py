"""One error hierarchy. Every message says what happened, with what (command, job id), and what to do.

Callers act on the fields (``exit_code``, ``job_id``, ``run_dir``, ``command``), never on the text:

    DagsterHpcError
      ConfigError               bad input, found before anything ran or was submitted
      TransportError            reaching the cluster failed
        AuthenticationError     credentials refused (never retried automatically)
        HostKeyError            unknown or changed host key
        SSHMasterExpiredError   no ControlMaster open (run `dagster-hpc login`)
        RemoteCommandError      a remote command exited non-zero
      EnvBuildError             building or installing an environment failed (before any job)
      SubmissionError           the scheduler did not accept the job, or its answer is unreadable
      CancelNotConfirmedError   a cancel was sent but the job is not confirmed stopped
      PayloadError              the payload ran and failed
        SlurmJobError           a Slurm job ended in a state other than COMPLETED
      FilesystemFullError       the run directory's filesystem is full (staging or during the job)
"""

from __future__ import annotations

# Lines of stderr an error message quotes (the full text stays on the error's ``stderr``).
STDERR_TAIL_LINES = 20


def stderr_tail(stderr: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(stderr.strip().splitlines()[-lines:])


def command_failure_message(
    command: str, exit_code: int | None, stderr: str, hint: str = "", *, what: str = "command"
) -> str:
    """The one shape of "a command failed" text: command, exit code, stderr tail, hint."""
    code = "unknown" if exit_code is None else str(exit_code)
    msg = f"{what} failed with exit code {code}: {command}\n--- stderr (tail) ---\n{stderr_tail(stderr)}"
    if hint:
        msg += f"\nhint: {hint}"
    return msg


class DagsterHpcError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(DagsterHpcError, ValueError):
    """Bad input, detected before anything ran or was submitted."""


class TransportError(DagsterHpcError):
    """Reaching the cluster failed (connect, authenticate, run a command, copy files)."""


class AuthenticationError(TransportError):
    """The server refused our credentials. Never retried automatically (no retry storms)."""


class HostKeyError(TransportError):
    """The server's host key is unknown or changed."""


class SSHMasterExpiredError(TransportError):
    """No OpenSSH ControlMaster connection is open (expired, or `dagster-hpc login` never ran)."""


class RemoteCommandError(TransportError):
    """A remote command exited non-zero where success was required."""

    def __init__(self, command: str, exit_code: int, stdout: str, stderr: str, hint: str = ""):
        self.command, self.exit_code, self.stdout, self.stderr = command, exit_code, stdout, stderr
        self.hint = hint
        super().__init__(command_failure_message(command, exit_code, stderr, hint))


class EnvBuildError(DagsterHpcError):
    """Building, packing or installing a payload environment failed (before any job exists).

    ``command``/``exit_code``/``stderr`` are set when a tool (uv, tar, a pack command) failed.
    """

    def __init__(
        self,
        message: str,
        *,
        command: str = "",
        exit_code: int | None = None,
        stderr: str = "",
        hint: str = "",
    ):
        self.command, self.exit_code, self.stderr, self.hint = command, exit_code, stderr, hint
        super().__init__(message)


class SubmissionError(DagsterHpcError):
    """The scheduler did not accept the job or gave an answer we cannot read (not the payload's
    fault: nothing of it ran). ``run_dir`` is the staged run directory."""

    def __init__(self, message: str, *, run_dir: str = "", answer: str = ""):
        self.run_dir, self.answer = run_dir, answer
        super().__init__(message)


class CancelNotConfirmedError(DagsterHpcError):
    """A cancel was sent but the scheduler does not confirm the job stopped: it may still run
    (and cost node-hours). ``state`` is the last state seen."""

    def __init__(self, message: str, *, job_id: str = "", state: str = "", run_dir: str = ""):
        self.job_id, self.state, self.run_dir = job_id, state, run_dir
        super().__init__(message)


class PayloadError(DagsterHpcError):
    """The payload ran and failed (non-zero exit, killed, timed out, ...).

    ``exit_code`` is the payload's own exit code (None when it wrote none: killed, never started),
    ``job_id`` the scheduler's id (a pid locally) and ``run_dir`` where its full output is.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        job_id: str = "",
        run_dir: str = "",
    ):
        self.exit_code, self.job_id, self.run_dir = exit_code, job_id, run_dir
        super().__init__(message)


class SlurmJobError(PayloadError):
    """A Slurm job ended in a state other than COMPLETED."""

    def __init__(
        self,
        message: str,
        *,
        state: str = "",
        job_id: str = "",
        exit_code: int | None = None,
        metadata: dict | None = None,
        run_dir: str = "",
    ):
        # state/job_id/exit_code/metadata let callers act on the outcome without parsing text.
        super().__init__(message, exit_code=exit_code, job_id=job_id, run_dir=run_dir)
        self.state = state
        self.metadata = dict(metadata or {})


class FilesystemFullError(DagsterHpcError):
    """The filesystem holding the run directory ``path`` is full (ENOSPC).

    Raised at staging (``job_id`` empty: nothing was submitted) or after the job (``job_id``
    set: the payload's output or its exit_code file could not be written, so its outcome is not
    trusted: never a success). ``state``/``metadata`` as on SlurmJobError for the latter.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        job_id: str = "",
        state: str = "",
        metadata: dict | None = None,
    ):
        self.path, self.job_id, self.state = path, job_id, state
        self.metadata = dict(metadata or {})
        super().__init__(message)
