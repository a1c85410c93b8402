"""The run directory's contract: file names, where run directories live, how paths are quoted.

A leaf module (it imports only ``errors``): the job wrapper, the Pipes reader, the backends,
retention and ``runs gc`` all agree on these names without importing each other.
"""

from __future__ import annotations

import shlex

from dagster_hpc.errors import ConfigError

# File names inside a run directory: one contract for job scripts, readers and backends.
JOB_SCRIPT = "job.sh"
LAUNCH_SCRIPT = "launch.sh"
ENV_FILE = "env.sh"  # mode 0600; holds extra_env (may contain secrets), sourced by job.sh
PIPES_CONTEXT = "pipes_context.json"
PIPES_MESSAGES = "pipes_messages.jsonl"
STDOUT = "stdout.log"
STDERR = "stderr.log"
EXIT_CODE = "exit_code"
WRAPPER_LOG = "wrapper.log"  # local mode: the wrapper's own output (Slurm uses its --output file)
SLURM_LOG = (
    "slurm.log"  # Slurm's own log for the batch step (the wrapper's output, not the payload's)
)
# One line per attempt start and end, appended by the wrapper (requeue, preemption): the Pipes
# reader tails it like the logs (docs/checkpoint-requeue.md has the format).
ATTEMPTS = "attempts.tsv"
# requeue=True: where the payload keeps its checkpoint (persists across attempts).
CHECKPOINT_DIR = "checkpoint"
# The payload-side checkpoint helper (pipes/checkpoint.py), staged next to every payload.
CHECKPOINT_HELPER = "dagster_hpc_checkpoint.py"

# Names the run directory already uses: a payload or extra file must not overwrite them.
RESERVED_NAMES = frozenset(
    {
        JOB_SCRIPT,
        LAUNCH_SCRIPT,
        ENV_FILE,
        PIPES_CONTEXT,
        PIPES_MESSAGES,
        STDOUT,
        STDERR,
        EXIT_CODE,
        WRAPPER_LOG,
        SLURM_LOG,
        ATTEMPTS,
        CHECKPOINT_DIR,
        CHECKPOINT_HELPER,
    }
)

# The one default for where things live on the cluster: ``~/.dagster-hpc`` holds ``runs/``
# (run directories, SlurmResource.remote_base_dir) and ``envs/`` (shipped environments).
DEFAULT_REMOTE_ROOT = "~/.dagster-hpc"
DEFAULT_REMOTE_BASE = f"{DEFAULT_REMOTE_ROOT}/runs"

# A run directory is <base>/<run id>/<step>-<suffix>: anything shallower is never deleted.
MIN_RUN_DIR_DEPTH = 3


def check_removable(run_dir: str) -> None:
    """Refuse to delete anything that cannot be a run directory (a bug must not rm -rf a home)."""
    parts = [p for p in run_dir.split("/") if p]
    if (
        not run_dir.startswith("/")
        or len(parts) < MIN_RUN_DIR_DEPTH
        or any(p in (".", "..") for p in parts)
    ):
        raise ConfigError(f"refusing to delete {run_dir!r}: not an absolute run-directory path")


def remote_path_expr(path: str, *, setting: str = "remote_base_dir") -> str:
    """The one quoting helper for cluster paths: ``~/x`` -> ``"$HOME"/x`` (the remote shell
    expands $HOME inside double quotes, never ``~``), anything else ``shlex.quote``d.

    ``setting`` names the option in the error for a relative path.
    """
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"/' + shlex.quote(rest) if rest else '"$HOME"/'
    if not path.startswith("/"):
        raise ConfigError(
            f"{setting} must be an absolute path on the cluster or start with ~/, got {path!r}"
        )
    return shlex.quote(path)
