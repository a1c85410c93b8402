"""The one remote command that stages a run directory and submits it, and cleans up after a refusal.

When sbatch refuses the job (an account, QOS, feature or limit the preflight cannot see), the run
directory we just unpacked (job script, launch script, the 0600 env file with the payload's
secrets) used to stay on the cluster. It is removed in the same shell, unless a job with that
working directory exists after all: sbatch can fail with a timeout after slurmctld queued the
job, and removing that job's directory would break it.
"""

from __future__ import annotations

import shlex

from dagster_hpc.rundir import JOB_SCRIPT

# Printed on stderr when the refused submission's run directory was removed.
REMOVED_MARK = "dagster-hpc: removed the staged run directory"
# Held (flock) by the staging + sbatch shell from before the unpack until sbatch answered: a
# re-execution after a killed Dagster process takes it before it looks for the job, so a
# submission still in flight (the connection holder outlives the Dagster process) is waited for,
# never raced by a second sbatch. The preflight refuses a login node without flock; should flock
# vanish after the preflight answer was cached, the submission stops before the unpack (nothing
# is ever submitted unlocked).
SUBMIT_LOCK = ".dagster-hpc-submit.lock"
# stderr of a submission that found no flock (the step's SubmissionError quotes it)
NO_FLOCK_MARK = "dagster-hpc: flock is not on the login node's PATH: nothing was submitted"


def submit_command(untar: str, remote_run_dir: str) -> str:
    """``untar`` (stdin -> run dir), then ``sbatch --parsable``; on failure remove the run dir
    unless squeue shows a job working there. The exit code is sbatch's (or the untar's)."""
    q = shlex.quote(remote_run_dir)
    owned = (
        "squeue --me --noheader --states=all --format=%Z 2>/dev/null"
        f" | grep -qxF -e {q} -e {shlex.quote(remote_run_dir.rstrip('/') + '/')}"
    )
    lock = shlex.quote(f"{remote_run_dir.rstrip('/')}/{SUBMIT_LOCK}")
    take_lock = (
        f"umask 077 && mkdir -p {q} && exec 9>>{lock} && "
        f"{{ command -v flock >/dev/null || {{ echo {shlex.quote(NO_FLOCK_MARK)} >&2; false; }}; }} && "
        "flock 9 && "
    )
    return (
        f"{{ {take_lock}{untar} && cd {q} && sbatch --parsable {JOB_SCRIPT}; }} || {{ rc=$?; cd / || exit $rc; "
        f"if ! {owned}; then rm -rf {q} && echo {shlex.quote(REMOVED_MARK)} >&2; fi; exit $rc; }}"
    )
