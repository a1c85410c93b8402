"""One error hierarchy. Every message says what happened, with what (command, job id), and what to do."""

from __future__ import annotations


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


class RemoteCommandError(TransportError):
    """A remote command exited non-zero where success was required."""

    def __init__(self, command: str, exit_code: int, stdout: str, stderr: str, hint: str = ""):
        self.command, self.exit_code, self.stdout, self.stderr = command, exit_code, stdout, stderr
        tail = "\n".join(stderr.strip().splitlines()[-20:])
        msg = f"command failed with exit code {exit_code}: {command}\n--- stderr (tail) ---\n{tail}"
        if hint:
            msg += f"\nhint: {hint}"
        super().__init__(msg)


class PayloadError(DagsterHpcError):
    """The payload ran and failed (non-zero exit, killed, timed out, ...)."""


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
    ):
        # state/job_id/exit_code/metadata let callers act on the outcome without parsing text.
        self.state, self.job_id, self.exit_code = state, job_id, exit_code
        self.metadata = dict(metadata or {})
        super().__init__(message)
